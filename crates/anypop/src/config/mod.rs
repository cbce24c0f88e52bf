//! The network file: parse, validate, compile. (Being written.)
