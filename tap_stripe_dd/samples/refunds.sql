SELECT * FROM `mystripeapi`.`/refunds`
LIMIT 1000
