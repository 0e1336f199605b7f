SELECT * FROM `mystripeapi`.`/payouts`
LIMIT 1000
