//! placeholder (api owner)
