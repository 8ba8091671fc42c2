//! The price book in force: `gengate.toml`'s `[[prices]]` (read-only while
//! running) beside those added over the admin API (in the store, re-read
//! with the stored channels). A model priced in both keeps the file's.

use std::sync::{Arc, RwLock};

use gengate_core::{ApiError, Price, PriceBook};

use gengate_store::TaskStore;

use crate::service::store_error;
pub use crate::stored_channels::Source;

pub struct Prices {
    file: Vec<Price>,
    book: RwLock<Arc<PriceBook>>,
}

impl Prices {
    pub fn new(file: Vec<Price>) -> Prices {
        let book = RwLock::new(Arc::new(PriceBook::new(file.clone())));
        Prices { file, book }
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

impl Prices {
    /// Every price in force, by model, with where it comes from.
    pub fn list(&self) -> Vec<(Price, Source)> {
        let source = |p: &Price| {
            if self.in_file(&p.model) {
                Source::Config
            } else {
                Source::Api
            }
        };
        self.book()
            .prices()
            .map(|p| (p.clone(), source(p)))
            .collect()
    }

    /// Add or replace a stored price (in force once the stored prices are
    /// re-read). Tasks already accepted keep their charge.
    pub async fn put(&self, store: &dyn TaskStore, price: &Price) -> Result<(), ApiError> {
        price
            .check()
            .map_err(|(field, rule)| ApiError::validation(field, rule))?;
        self.refuse_file_price(&price.model)?;
        store
            .put_price(price, crate::now_ms())
            .await
            .map_err(store_error)
    }

    /// Remove a stored price: the model then costs what `*` says, or nothing.
    pub async fn delete(&self, store: &dyn TaskStore, model: &str) -> Result<(), ApiError> {
        self.refuse_file_price(model)?;
        if !store.delete_price(model).await.map_err(store_error)? {
            return Err(ApiError::NotFound(format!(
                "no stored price for model {model:?}"
            )));
        }
        Ok(())
    }

    fn refuse_file_price(&self, model: &str) -> Result<(), ApiError> {
        if self.in_file(model) {
            return Err(ApiError::Conflict(format!(
                "the price of {model:?} is set in gengate.toml: change it there"
            )));
        }
        Ok(())
    }
}
