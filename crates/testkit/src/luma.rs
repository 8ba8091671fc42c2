//! An emulated Luma Dream Machine API on loopback.
