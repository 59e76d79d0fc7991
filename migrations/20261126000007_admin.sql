-- The admin role and disabled accounts.
--
-- `is_admin` is not granted through the API: the API process sets it at start-up for the one
-- account named by FASTNPC_ADMIN_USERNAME and clears it everywhere else, so the configuration is
-- the single source of truth for who administers a deployment.
alter table users add column is_admin boolean not null default false;

-- A disabled account keeps its data (an admin action never deletes another user's data); its
-- sessions are revoked and its API keys stop authenticating until it is enabled again.
alter table users add column disabled_at timestamptz;
