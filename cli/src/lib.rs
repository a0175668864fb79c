//! The parts of `shoal` that other crates drive too: the compose loader and
//! the service flag parsers it shares with `service create`. The binary
//! uses them from here; the fuzz targets in `fuzz/` feed them bad input.

pub mod compose;

pub mod commands {
    //! The flag parsers the compose loader shares with `service create`.
    pub mod service_flags;

    pub mod service {
        //! `--lb-*` flags.
        pub mod lb_flags;
    }
}
