//! The wasm floor for the benchmark: a filter written the usual way, with
//! the proxy-wasm Rust SDK (which exports every callback, so Envoy enters
//! the VM for each of them), the same build profile as our filters, and no
//! work. Our filters use their own entry points instead (wasm_host::plugin)
//! and can come in under it. Plugin
//! configuration `"http"` makes it an HTTP filter, `"network"` a network
//! filter (the SDK needs the context type from the root).

#[cfg(target_arch = "wasm32")]
mod filter {
    use proxy_wasm::traits::{Context, HttpContext, RootContext, StreamContext};
    use proxy_wasm::types::ContextType;

    proxy_wasm::main! {{
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(EmptyRoot(ContextType::HttpContext)) });
    }}

    struct EmptyRoot(ContextType);
    struct Empty;

    impl Context for EmptyRoot {}
    impl Context for Empty {}
    impl HttpContext for Empty {}
    impl StreamContext for Empty {}

    impl RootContext for EmptyRoot {
        fn on_configure(&mut self, _size: usize) -> bool {
            // Once per VM, not per request: the SDK's getter is fine here.
            if let Some(config) = self.get_plugin_configuration() {
                if config.windows(7).any(|w| w == b"network") {
                    self.0 = ContextType::StreamContext;
                }
            }
            true
        }

        fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
            Some(Box::new(Empty))
        }

        fn create_stream_context(&self, _context_id: u32) -> Option<Box<dyn StreamContext>> {
            Some(Box::new(Empty))
        }

        fn get_type(&self) -> Option<ContextType> {
            Some(self.0)
        }
    }
}
