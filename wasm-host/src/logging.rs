//! Our `log` logger on Envoy's log hostcall, and the panic hook.

use crate::abi;

/// proxy-wasm log levels (`LogLevel`), as the log hostcalls number them.
mod log_level {
    pub const TRACE: u32 = 0;
    pub const DEBUG: u32 = 1;
    pub const INFO: u32 = 2;
    pub const WARN: u32 = 3;
    pub const ERROR: u32 = 4;
}

/// Our logger: the SDK's calls the log hostcall with `unwrap()`, so a
/// refused log line would panic and kill the VM. Ours drops it instead.
struct HostLogger;

static LOGGER: HostLogger = HostLogger;

impl log::Log for HostLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            log::Level::Trace => log_level::TRACE,
            log::Level::Debug => log_level::DEBUG,
            log::Level::Info => log_level::INFO,
            log::Level::Warn => log_level::WARN,
            log::Level::Error => log_level::ERROR,
        };
        let message = record.args().to_string();
        // SAFETY: plain ABI call with a valid buffer. A failure loses the line.
        let _ = unsafe { abi::proxy_log(level, message.as_ptr(), message.len()) };
    }

    fn flush(&self) {}
}

/// Installs our logger at Envoy's current wasm log level, so debug lines
/// are not even formatted unless Envoy runs with debug logging.
pub fn init_logging() {
    let mut level: u32 = log_level::INFO;
    // SAFETY: plain ABI call with a valid pointer to a local.
    if unsafe { abi::proxy_get_log_level(&mut level) } != 0 {
        level = log_level::INFO;
    }
    let filter = match level {
        log_level::TRACE => log::LevelFilter::Trace,
        log_level::DEBUG => log::LevelFilter::Debug,
        log_level::INFO => log::LevelFilter::Info,
        log_level::WARN => log::LevelFilter::Warn,
        log_level::ERROR => log::LevelFilter::Error,
        _ => log::LevelFilter::Off,
    };
    // Already installed on a reconfigure: only the level changes.
    // A panic should never happen (clippy denies the usual causes); if one
    // does, its message reaches Envoy's log before the VM aborts. (Not in
    // native unit tests, whose failures are panics the test runner prints.)
    if log::set_logger(&LOGGER).is_ok() && cfg!(target_arch = "wasm32") {
        std::panic::set_hook(Box::new(|info| log::error!("panic in the wasm filter: {info}")));
    }
    log::set_max_level(filter);
}
