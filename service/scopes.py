"""The API keys' scope names, importable without pydantic: `scantune keys new` lists them when
the CLI's parser is built, before any service starts. `service.config.common.Scope` is the
same list as the settings' type (a test keeps the two equal)."""

SCOPE_NAMES = (
    "read",
    "jobs:write",
    "models:write",
    "predict",
    "series:read",
    "series:retrieve",
    "admin",
)
