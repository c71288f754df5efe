#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| paycore_fuzz::parse_file(paycore_formats::Format::Jsonl, data));
