"""The ledger: schema, engine set-up, the single writer, and the queries the API answers from."""
