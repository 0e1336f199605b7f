SELECT * FROM `mystripeapi`.`/charges`
LIMIT 1000
