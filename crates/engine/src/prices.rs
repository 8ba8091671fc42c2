//! The price book in force: `gengate.toml`'s `[[prices]]` (read-only while
//! running) beside those added over the admin API (in the store, re-read
//! with the stored channels). A model priced in both keeps the file's.

use std::sync::{Arc, RwLock};

use gengate_core::{Price, PriceBook};

pub struct Prices {
    file: Vec<Price>,
    book: RwLock<Arc<PriceBook>>,
}

impl Prices {
    pub fn new(file: Vec<Price>) -> Prices {
        let book = RwLock::new(Arc::new(PriceBook::new(file.clone())));
        Prices { file, book }
    }

    /// `gengate.toml`'s prices.
    pub fn file(&self) -> &[Price] {
        &self.file
    }

    /// Whether `model`'s price comes from `gengate.toml`.
    pub fn in_file(&self, model: &str) -> bool {
        self.file.iter().any(|p| p.model == model)
    }

    /// The book as it stands now.
    pub fn book(&self) -> Arc<PriceBook> {
        self.book
            .read()
            .map(|b| b.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Use `stored` beside the file's prices.
    pub fn set_stored(&self, stored: Vec<Price>) {
        let stored = stored.into_iter().filter(|p| !self.in_file(&p.model));
        let book = Arc::new(PriceBook::new(stored.chain(self.file.iter().cloned())));
        match self.book.write() {
            Ok(mut b) => *b = book,
            Err(e) => *e.into_inner() = book,
        }
    }
}
