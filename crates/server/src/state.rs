//! What every handler reaches: the task service (the one door to tasks),
//! the keys, the store for channels and deliveries, and how files are named.

use std::sync::Arc;
use std::time::Duration;

use gengate_engine::Engine;
use gengate_engine::keys::KeyService;
use gengate_engine::service::TaskService;
use gengate_store::TaskStore;

use gengate_core::{FileLinks, Links};

use crate::rendered;

#[derive(Clone)]
pub struct AppState {
    pub tasks: Arc<TaskService>,
    pub store: Arc<dyn TaskStore>,
    pub engine: Arc<Engine>,
    /// How result URLs (`http://host:8080/files/...`) are written and checked.
    pub file_links: Arc<FileLinks>,
    /// Whether `/files/` streams results or redirects to storage.
    pub file_urls: crate::files::FileUrls,
    /// Keys: authentication and the admin API's key management.
    pub keys: Arc<KeyService>,
    /// Rendered finished tasks, served as bytes.
    pub rendered: Arc<rendered::Rendered>,
    /// How long a synchronous answer (OpenAI images) waits for its task.
    pub sync_wait: Duration,
}

impl AppState {
    /// Result URLs as written now.
    pub fn links(&self) -> Links<'_> {
        self.file_links.at(gengate_engine::now_ms())
    }
}
