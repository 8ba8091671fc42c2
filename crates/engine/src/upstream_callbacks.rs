//! Callbacks from upstreams (not to clients: that is `webhooks`). A task on
//! a channel with `callbacks` gets a URL of gengate's own at submit,
//! `<public_url>/upstream/callbacks/<channel>/<task id>?token=<token>`,
//! where the token is an HMAC of channel and task under a secret every
//! instance shares through the store. What arrives there is checked (the
//! token, then the upstream's own signature where it signs, then that it
//! speaks of this task's upstream job) and applied at once, like a poll's
//! answer. Polls stay as a slow fallback in case a callback never comes.

use std::time::Duration;

use bytes::Bytes;
use gengate_core::Task;
use gengate_providers::{PollOutcome, ProviderError};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::Engine;
use crate::channels::Channel;

/// The store's name for the secret callback tokens are made with.
const SECRET_NAME: &str = "upstream-callback-token";

/// Hex digits of the HMAC a token keeps (128 bits).
const TOKEN_LEN: usize = 32;

/// Why a callback was not taken.
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("no such task on this channel")]
    NotFound,
    #[error("the callback's token or signature is not valid")]
    Unauthorized,
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Store(String),
}

/// How long a callback waits for its task's submit to be recorded.
const SUBMIT_WAIT: Duration = Duration::from_secs(10);

/// The longest a task with callbacks goes unpolled.
const MAX_FALLBACK: Duration = Duration::from_secs(300);

/// With callbacks, polls only catch a callback that never came: after the
/// learned duration twice over (at least 30 s), or, before any is learned,
/// after the longest wait.
pub(crate) fn fallback_poll(expected: Option<Duration>) -> Duration {
    expected.map_or(MAX_FALLBACK, |e| {
        (e * 2).clamp(Duration::from_secs(30), MAX_FALLBACK)
    })
}

impl Engine {
    async fn callback_secret(&self) -> Result<&[u8], CallbackError> {
        self.callback_secret
            .get_or_try_init(|| async {
                self.store
                    .gateway_secret(SECRET_NAME)
                    .await
                    .map_err(|e| CallbackError::Store(e.to_string()))
            })
            .await
            .map(Vec::as_slice)
    }

    async fn callback_token(&self, channel: &str, task: Uuid) -> Result<String, CallbackError> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.callback_secret().await?)
            .map_err(|e| CallbackError::Store(e.to_string()))?;
        mac.update(format!("{channel}/{task}").as_bytes());
        let mut token = hex::encode(mac.finalize().into_bytes());
        token.truncate(TOKEN_LEN);
        Ok(token)
    }

    /// The URL `channel`'s upstream should call back for `task`, when the
    /// channel uses callbacks and its upstream makes them.
    pub(crate) async fn callback_url(&self, channel: &Channel, task: &Task) -> Option<String> {
        if !channel.spec.callbacks || !channel.provider.calls_back() {
            return None;
        }
        let base = self.cfg.public_url.as_deref()?.trim_end_matches('/');
        match self.callback_token(channel.name(), task.id).await {
            Ok(token) => Some(format!(
                "{base}/upstream/callbacks/{}/{}?token={token}",
                channel.name(),
                task.id
            )),
            Err(e) => {
                tracing::warn!(error = %e, "no callback URL; the task will be polled");
                None
            }
        }
    }

    /// The task, once its submit is recorded: a fast upstream can call back
    /// before the answer to the submit has reached gengate, so an
    /// unfinished task without its upstream job is looked at again for a
    /// while rather than its news refused (and left to a fallback poll).
    async fn submitted_task(&self, task_id: Uuid) -> Result<Option<Task>, CallbackError> {
        let until = tokio::time::Instant::now() + SUBMIT_WAIT;
        loop {
            let task = self
                .store
                .load_task(task_id)
                .await
                .map_err(|e| CallbackError::Store(e.to_string()))?;
            match &task {
                Some(t)
                    if t.upstream_ref.is_none()
                        && !t.state.is_terminal()
                        && tokio::time::Instant::now() < until =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => return Ok(task),
            }
        }
    }

    /// A callback arrived for `task_id` on `channel`: check it, then apply
    /// it in the background (the upstream gets its answer at once).
    pub async fn upstream_callback(
        self: &std::sync::Arc<Self>,
        channel: &str,
        task_id: Uuid,
        token: &str,
        headers: &reqwest::header::HeaderMap,
        body: Bytes,
    ) -> Result<(), CallbackError> {
        let expected = self.callback_token(channel, task_id).await?;
        // Constant time: the token is the only thing keeping strangers out.
        let same = expected.len() == token.len()
            && expected
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if !same {
            count(channel, "unauthorized");
            return Err(CallbackError::Unauthorized);
        }
        let task = self
            .submitted_task(task_id)
            .await?
            .filter(|t| t.channel.as_deref() == Some(channel))
            .ok_or(CallbackError::NotFound)?;
        let ch = self.channels.get(channel).ok_or(CallbackError::NotFound)?;
        let news = ch.provider.read_callback(headers, &body).map_err(|e| {
            count(channel, "refused");
            match e {
                ProviderError::Auth(_) => CallbackError::Unauthorized,
                other => CallbackError::Refused(other.to_string()),
            }
        })?;
        if !task
            .upstream_ref
            .as_deref()
            .is_some_and(|r| same_job(r, &news.upstream_id))
        {
            count(channel, "refused");
            return Err(CallbackError::Refused(format!(
                "the callback is about upstream job {:?}, not this task's",
                news.upstream_id
            )));
        }
        count(channel, "accepted");
        if task.state.is_terminal() {
            return Ok(());
        }
        let me = self.clone();
        tokio::spawn(async move {
            let result = match news.outcome {
                // Progress only: the fallback poll stays where it was.
                PollOutcome::Running { progress, .. } => match progress {
                    Some(p) if p != task.progress => {
                        me.apply(
                            &task,
                            gengate_core::TaskUpdate {
                                progress: Some(p),
                                ..Default::default()
                            },
                        )
                        .await
                    }
                    _ => Ok(()),
                },
                done => me.settle_poll(&task, &ch, Ok(done), crate::now_ms()).await,
            };
            if let Err(e) = result {
                tracing::error!(task = %task.id, error = %e, "applying an upstream callback failed; polls will catch up");
            }
        });
        Ok(())
    }
}

/// Whether an upstream ref (the id, or `<path>/<id>`) names job `id`.
fn same_job(upstream_ref: &str, id: &str) -> bool {
    !id.is_empty()
        && upstream_ref
            .strip_suffix(id)
            .is_some_and(|head| head.is_empty() || head.ends_with('/'))
}

fn count(channel: &str, outcome: &'static str) {
    metrics::counter!(
        "gengate_upstream_callbacks_total",
        "channel" => channel.to_string(),
        "outcome" => outcome
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn news_must_name_the_tasks_own_job() {
        assert!(same_job("abc", "abc"));
        assert!(same_job("images/generations/abc", "abc"));
        assert!(!same_job("xabc", "abc"));
        assert!(!same_job("abc", ""));
        assert!(!same_job("abc", "bc"));
    }

    #[test]
    fn fallback_polls_wait_past_the_expected_end() {
        assert_eq!(fallback_poll(None), MAX_FALLBACK);
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(fallback_poll(secs(1)), Duration::from_secs(30));
        assert_eq!(fallback_poll(secs(60)), Duration::from_secs(120));
        assert_eq!(fallback_poll(secs(3600)), MAX_FALLBACK);
    }
}
