//! Guest assets: the kernel manifest, module selection and the reproducible initramfs builder.
