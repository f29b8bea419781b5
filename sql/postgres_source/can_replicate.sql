SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user
