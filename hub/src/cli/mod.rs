//! placeholder (cli owner)
