#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| paycore_fuzz::emvco(data));
