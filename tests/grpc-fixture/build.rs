fn main() -> Result<(), Box<dyn std::error::Error>> {
    // protox compiles the proto in Rust: no protoc needed on the machine.
    let descriptors = protox::compile(["proto/echo.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto/echo.proto");
    Ok(())
}
