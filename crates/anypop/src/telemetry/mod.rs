//! Counters. (being written)
