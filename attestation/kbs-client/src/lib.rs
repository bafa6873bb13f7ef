//! KBS client: the RCAR flow used by the agent and the CLI.
