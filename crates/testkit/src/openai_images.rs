//! An emulated OpenAI images API on loopback.
