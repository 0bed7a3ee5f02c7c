-- NULL: the deployment's default plan (ACCOUNT_DEFAULT_PLAN).
ALTER TABLE account.accounts ADD COLUMN plan jsonb;
