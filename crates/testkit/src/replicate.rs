//! An emulated Replicate API on loopback.
