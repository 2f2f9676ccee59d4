//! placeholder (gateway owner)
