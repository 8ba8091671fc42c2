//! gengate's core: the task model, its state machine, request validation and
//! the dialects' views. Pure: no I/O, no clock, no randomness.

pub mod channel;
pub mod credits;
pub mod delivery;
pub mod dialect;
pub mod error;
pub mod links;
pub mod request;
pub mod retention;
pub mod task;
pub mod time;
pub mod usage;
pub mod validate;

pub use channel::{ChannelSpec, Credentials, ProviderKind, SpecError};
pub use credits::{Admission, Charge, Credits, KeyLimits, Price, PriceBook, Refusal};
pub use delivery::{
    Delivery, DeliveryAttempt, DeliveryOutcome, DeliveryState, RetrySchedule, Settlement,
};
pub use error::ApiError;
pub use links::{FileLinks, Links};
pub use request::{GenerationRequest, ImageFormat, ImageRole, ImageSource, InputImage, Upload};
pub use retention::Retention;
pub use task::{
    ApiKey, Artifact, ArtifactRole, Dialect, Millis, NewTask, Task, TaskEvent, TaskKind, TaskState,
    TaskUpdate,
};
