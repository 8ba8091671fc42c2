//! Emulated upstreams and helpers for gengate's tests. Everything here binds
//! 127.0.0.1 only: no test ever sends traffic off the machine.

pub mod call_back;
pub mod comfyui;
pub mod crash;
pub mod faults;
pub mod fixtures;
pub mod gate;
pub mod image_host;
pub mod kling;
pub mod luma;
pub mod openai_images;
pub mod openai_videos;
pub mod openapi;
pub mod postgres;
pub mod python;
pub mod receiver;
pub mod replicate;
pub mod s3;
pub mod veo;

pub use gate::TcpGate;
pub use image_host::{ImageHost, RED_PNG};
pub use kling::{Fault, KlingAccount, KlingEmu};
pub use postgres::PgTestDb;
pub use receiver::{Received, Receiver, Reply};
pub use s3::S3Server;
