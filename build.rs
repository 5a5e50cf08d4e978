//! Builds csrc/extwrite.c, amitool's bridge to e2fsprogs' libext2fs (the
//! ext2/3/4 writer behind the copy-on-write overlay). Needs libext2fs-dev.
fn main() {
    println!("cargo:rerun-if-changed=csrc/extwrite.c");
    if !std::path::Path::new("/usr/include/ext2fs/ext2fs.h").exists()
        && std::env::var_os("AMITOOL_EXT2FS_INCLUDE").is_none()
    {
        println!("cargo:warning=ext2fs/ext2fs.h not found: install libext2fs-dev (Debian, Ubuntu) or e2fsprogs-devel (Fedora)");
    }
    let mut build = cc::Build::new();
    build.file("csrc/extwrite.c").warnings(true);
    if let Some(dir) = std::env::var_os("AMITOOL_EXT2FS_INCLUDE") {
        build.include(dir);
    }
    build.compile("amitool_extwrite");
    println!("cargo:rustc-link-lib=ext2fs");
    println!("cargo:rustc-link-lib=com_err");
}
