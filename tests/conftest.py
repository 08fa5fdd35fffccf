"""Shared fixtures. Service fixtures live in tests/fixtures/ and are loaded here."""

pytest_plugins = ["fixtures.common", "fixtures.postgres", "fixtures.pgbackrest", "fixtures.sshd", "fixtures.mariadb", "fixtures.oracle_fake",
                  "fixtures.signers"]
