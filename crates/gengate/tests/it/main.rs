//! gengate's integration tests: one binary, so the whole server is linked
//! once rather than once per area; a module per area, and the harness that
//! starts gengate for them.

#[macro_use]
mod harness;

mod admin_channels;
mod admin_keys;
mod browser;
mod callbacks;
mod channels;
mod console;
mod crash_loop;
mod credits;
mod dream_machine_api;
mod feed;
mod http_contract;
mod kling_api;
mod kling_video_api;
mod limits;
mod luma_api;
mod media;
mod multi_instance;
mod openai_images_api;
mod openai_videos_api;
mod outages;
mod process;
mod providers_e2e;
mod sdks;
mod security;
mod shutdown;
mod storage;
mod tasks_api;
mod tasks_cli;
mod upstream_gengate;
mod video_upstreams;
