//! The only module with extern "C" (being written).
