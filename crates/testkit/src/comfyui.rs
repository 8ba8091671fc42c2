//! An emulated ComfyUI server on loopback.
