//! Another gengate, through its Luma and Kling dialects.
//!
//! Being written: the channel is refused at start until this lands.

use std::sync::Arc;

use gengate_core::ChannelSpec;

use crate::Provider;

pub fn from_spec(spec: &ChannelSpec) -> Result<Arc<dyn Provider>, String> {
    Err(format!(
        "channel {:?}: the {} provider is not available in this build yet",
        spec.name,
        spec.provider.as_str()
    ))
}
