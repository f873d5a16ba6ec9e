;; tablehuge: hostile; declares a table of 2^27 elements (1 GiB of
;; references in the host) and answers {"ok":0}.
(module
  (memory (export "memory") 1)
  (table 134217728 funcref)
  (func (export "talon_abi_version_1"))
  (func (export "talon_alloc") (param $n i32) (result i32) (i32.const 1024))
  (data (i32.const 64) "{\"ok\":0}")
  (func (export "talon_call") (param $p i32) (param $n i32) (result i64)
    (i64.const 274877906952)) ;; (64 << 32) | 8
)
