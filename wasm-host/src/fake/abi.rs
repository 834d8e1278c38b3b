//! The ABI, natively: the same signatures as the wasm imports, answered by
//! this thread's [`FakeHost`].
#![allow(clippy::missing_safety_doc)]

use proto::prost::Message;
use proto::wasm::{DeclarePropertyArguments, SetEnvoyFilterStateArguments};

use super::{bytes, encode_pairs, give, status, text, with, HOST};

pub unsafe fn proxy_get_property(
    path_data: *const u8,
    path_size: usize,
    return_value_data: *mut *mut u8,
    return_value_size: *mut usize,
) -> u32 {
    // SAFETY: the wrapper passes its encoded path.
    let path = text(unsafe { bytes(path_data, path_size) }).replace('\0', ".");
    with(|h| {
        h.calls.push(format!("get_property {path}"));
        if let Some(status) = h.fails("get_property") {
            return status;
        }
        match h.properties.get(&path) {
            // SAFETY: the wrapper passes pointers to its locals.
            Some(value) => unsafe {
                give(value, return_value_data, return_value_size);
                status::OK
            },
            None => status::NOT_FOUND,
        }
    })
}

pub unsafe fn proxy_set_property(
    path_data: *const u8,
    path_size: usize,
    value_data: *const u8,
    value_size: usize,
) -> u32 {
    // SAFETY: the wrapper passes valid buffers.
    let (path, value) = unsafe { (text(bytes(path_data, path_size)), bytes(value_data, value_size).to_vec()) };
    with(|h| {
        h.calls.push(format!("set_property {path}"));
        if let Some(status) = h.fails("set_property") {
            return status;
        }
        h.filter_state.insert(path, value);
        status::OK
    })
}

pub unsafe fn proxy_get_buffer_bytes(
    buffer_type: u32,
    start: usize,
    max_size: usize,
    return_buffer_data: *mut *mut u8,
    return_buffer_size: *mut usize,
) -> u32 {
    with(|h| {
        h.calls.push(format!("get_buffer_bytes {buffer_type} {start} {max_size}"));
        if let Some(status) = h.fails("get_buffer_bytes") {
            return status;
        }
        let Some(buffer) = h.buffers.get(&buffer_type) else { return status::NOT_FOUND };
        let to = start.saturating_add(max_size).min(buffer.len());
        let range = buffer.get(start.min(to)..to).unwrap_or_default();
        // SAFETY: the wrapper passes pointers to its locals.
        unsafe { give(range, return_buffer_data, return_buffer_size) };
        status::OK
    })
}

pub unsafe fn proxy_set_buffer_bytes(
    buffer_type: u32,
    start: usize,
    size: usize,
    buffer_data: *const u8,
    buffer_size: usize,
) -> u32 {
    // SAFETY: the wrapper passes a valid buffer.
    let value = unsafe { bytes(buffer_data, buffer_size) }.to_vec();
    with(|h| {
        h.calls.push(format!("set_buffer_bytes {buffer_type} {start} {size} {}", value.len()));
        if let Some(status) = h.fails("set_buffer_bytes") {
            return status;
        }
        let buffer = h.buffers.entry(buffer_type).or_default();
        if start > buffer.len() {
            return status::BAD_ARGUMENT;
        }
        let end = start.saturating_add(size).min(buffer.len());
        buffer.splice(start..end, value);
        status::OK
    })
}

pub unsafe fn proxy_call_foreign_function(
    function_name_data: *const u8,
    function_name_size: usize,
    arguments_data: *const u8,
    arguments_size: usize,
    _results_data: *mut *mut u8,
    _results_size: *mut usize,
) -> u32 {
    // SAFETY: the wrapper passes valid buffers.
    let (name, args) =
        unsafe { (text(bytes(function_name_data, function_name_size)), bytes(arguments_data, arguments_size)) };
    with(|h| {
        h.calls.push(format!("foreign {name}"));
        if !h.foreign_functions.contains(&name.as_str()) {
            return status::NOT_FOUND;
        }
        if let Some(status) = h.fails(&format!("foreign {name}")).or_else(|| h.fails("call_foreign_function")) {
            return status;
        }
        match name.as_str() {
            "declare_property" => match DeclarePropertyArguments::decode(args) {
                Ok(declared) => h.declared.push(declared),
                Err(_) => return status::BAD_ARGUMENT,
            },
            "set_envoy_filter_state" => match SetEnvoyFilterStateArguments::decode(args) {
                Ok(set) => h.envoy_filter_state.push((set.path, set.value)),
                Err(_) => return status::BAD_ARGUMENT,
            },
            _ => {}
        }
        status::OK
    })
}

pub unsafe fn proxy_get_header_map_pairs(
    map_type: u32,
    return_map_data: *mut *mut u8,
    return_map_size: *mut usize,
) -> u32 {
    with(|h| {
        h.calls.push(format!("get_header_map_pairs {map_type}"));
        if let Some(status) = h.fails("get_header_map_pairs") {
            return status;
        }
        let Some(pairs) = h.headers.get(&map_type) else { return status::NOT_FOUND };
        // SAFETY: the wrapper passes pointers to its locals.
        unsafe { give(&encode_pairs(pairs), return_map_data, return_map_size) };
        status::OK
    })
}

pub unsafe fn proxy_replace_header_map_value(
    map_type: u32,
    key_data: *const u8,
    key_size: usize,
    value_data: *const u8,
    value_size: usize,
) -> u32 {
    // SAFETY: the wrapper passes valid buffers.
    let (name, value) = unsafe { (text(bytes(key_data, key_size)), bytes(value_data, value_size).to_vec()) };
    with(|h| {
        h.calls.push(format!("replace_header_map_value {map_type} {name}"));
        if let Some(status) = h.fails("replace_header_map_value") {
            return status;
        }
        let pairs = h.headers.entry(map_type).or_default();
        pairs.retain(|(n, _)| *n != name);
        pairs.push((name, value));
        status::OK
    })
}

pub unsafe fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> u32 {
    // SAFETY: the wrapper passes a valid buffer.
    let name = text(unsafe { bytes(key_data, key_size) });
    with(|h| {
        h.calls.push(format!("remove_header_map_value {map_type} {name}"));
        if let Some(status) = h.fails("remove_header_map_value") {
            return status;
        }
        h.headers.entry(map_type).or_default().retain(|(n, _)| *n != name);
        status::OK
    })
}

pub unsafe fn proxy_close_stream(stream_type: u32) -> u32 {
    with(|h| {
        h.calls.push(format!("close_stream {stream_type}"));
        if let Some(status) = h.fails("close_stream") {
            return status;
        }
        h.closed.push(stream_type);
        status::OK
    })
}

pub unsafe fn proxy_set_effective_context(context_id: u32) -> u32 {
    with(|h| {
        h.calls.push(format!("set_effective_context {context_id}"));
        if let Some(status) = h.fails("set_effective_context") {
            return status;
        }
        h.effective_context = Some(context_id);
        status::OK
    })
}

pub unsafe fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32 {
    with(|h| {
        // SAFETY: the wrapper passes a pointer to its local.
        unsafe { *return_time = h.now_nanos };
        status::OK
    })
}

pub unsafe fn proxy_set_tick_period_milliseconds(period: u32) -> u32 {
    with(|h| {
        h.calls.push(format!("set_tick_period_milliseconds {period}"));
        if let Some(status) = h.fails("set_tick_period_milliseconds") {
            return status;
        }
        h.tick_period_ms = Some(period);
        status::OK
    })
}

pub unsafe fn proxy_define_metric(
    _metric_type: u32,
    name_data: *const u8,
    name_size: usize,
    return_id: *mut u32,
) -> u32 {
    // SAFETY: the wrapper passes a valid buffer.
    let name = text(unsafe { bytes(name_data, name_size) });
    with(|h| {
        if let Some(status) = h.fails("define_metric") {
            return status;
        }
        // As Envoy: a new id (and a new entry) on every call, even for a
        // name already defined; entries of one name are one stat.
        h.calls.push(format!("define_metric {name}"));
        h.metrics.push((name, 0));
        let id = h.metrics.len() - 1;
        // SAFETY: the wrapper passes a pointer to its local.
        unsafe { *return_id = id as u32 };
        status::OK
    })
}

pub unsafe fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32 {
    with(|h| match h.metrics.get_mut(metric_id as usize) {
        Some((_, value)) => {
            *value += offset;
            h.calls.push(format!("increment_metric {metric_id} {offset}"));
            status::OK
        }
        None => status::NOT_FOUND,
    })
}

pub unsafe fn proxy_record_metric(metric_id: u32, value: u64) -> u32 {
    with(|h| match h.metrics.get_mut(metric_id as usize) {
        // A histogram's entry holds the sum of what it recorded; the call
        // log has each value.
        Some((name, sum)) => {
            *sum += value as i64;
            let line = format!("record_metric {name} {value}");
            h.calls.push(line);
            status::OK
        }
        None => status::NOT_FOUND,
    })
}

pub unsafe fn proxy_get_log_level(return_level: *mut u32) -> u32 {
    // SAFETY: the wrapper passes a pointer to its local.
    with(|h| unsafe { *return_level = h.log_level });
    status::OK
}

pub unsafe fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32 {
    // SAFETY: the logger passes a valid buffer.
    let message = text(unsafe { bytes(message_data, message_size) });
    // A line logged while a test holds the host (a failing assertion
    // inside `with`) goes to stderr rather than panicking again.
    HOST.with(|h| match h.try_borrow_mut() {
        Ok(mut h) => h.logs.push((level, message)),
        Err(_) => eprintln!("log while the fake host is borrowed: {message}"),
    });
    status::OK
}
