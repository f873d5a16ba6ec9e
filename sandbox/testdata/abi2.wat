;; abi2: built for a future ABI version 2.
(module
  (memory (export "memory") 1)
  (func (export "talon_abi_version_2"))
  (func (export "talon_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "talon_call") (param i32 i32) (result i64) (i64.const 0)))
