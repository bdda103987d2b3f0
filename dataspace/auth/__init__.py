"""Identity: principals, users and OAuth clients, roles, and the authorization decision."""
