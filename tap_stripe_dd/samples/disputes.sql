SELECT * FROM `mystripeapi`.`/disputes`
LIMIT 1000
