//! Storage gengate controls for results and inputs: a local directory. Keys
//! are relative paths; files are written whole (temp file, fsync, rename),
//! so a reader never sees half a file and a crash leaves none behind.

use std::path::{Component, Path, PathBuf};

use tokio::io::AsyncWriteExt;

#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    pub fn new(root: impl Into<PathBuf>) -> FileStore {
        FileStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of `key`, refusing keys that would escape the root.
    pub fn path(&self, key: &str) -> std::io::Result<PathBuf> {
        let rel = Path::new(key);
        if key.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("bad storage key {key:?}"),
            ));
        }
        Ok(self.root.join(rel))
    }

    pub async fn put(&self, key: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.path(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        tokio::fs::create_dir_all(&dir).await?;
        let tmp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4()));
        let mut f = tokio::fs::File::create(&tmp).await?;
        f.write_all(bytes).await?;
        f.sync_all().await?;
        drop(f);
        tokio::fs::rename(&tmp, &path).await?;
        // The rename is durable only once the directory is synced.
        tokio::fs::File::open(&dir).await?.sync_all().await
    }

    /// `put` for content-addressed keys: a key that exists already holds
    /// these very bytes, so it is not written again.
    pub async fn put_once(&self, key: &str, bytes: &[u8]) -> std::io::Result<()> {
        if tokio::fs::try_exists(self.path(key)?).await? {
            return Ok(());
        }
        self.put(key, bytes).await
    }

    pub async fn get(&self, key: &str) -> std::io::Result<Vec<u8>> {
        tokio::fs::read(self.path(key)?).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let fs = FileStore::new(dir.path());
        fs.put("a/b/c.txt", b"hi").await.unwrap();
        assert_eq!(fs.get("a/b/c.txt").await.unwrap(), b"hi");
        assert!(fs.put("../x", b"no").await.is_err());
        assert!(fs.put("/etc/x", b"no").await.is_err());
        assert!(fs.path("a/../../b").is_err());
    }
}
