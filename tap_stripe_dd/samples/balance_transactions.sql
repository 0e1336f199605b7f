SELECT * FROM `mystripeapi`.`/balance_transactions`
LIMIT 1000
