//! The ttrpc API between the Cloister runtime and its guest agent.
