SELECT * FROM `mystripeapi`.`/customers`
LIMIT 1000
