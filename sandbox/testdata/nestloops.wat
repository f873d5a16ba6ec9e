;; nestloops: hostile; 100 loops nested in one another, deeper than the
;; sandbox allows (wazero's compiler takes time that grows with the square
;; of the depth; see wasmgen for the larger shapes). Refused at load.
(module
  (memory (export "memory") 1)
  (func (export "talon_abi_version_1"))
  (func (export "talon_alloc") (param $n i32) (result i32) (i32.const 1024))
  (data (i32.const 64) "{\"ok\":0}")
  (func (export "talon_call") (param $p i32) (param $n i32) (result i64)
    (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop (loop
    ))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))
    (i64.const 274877906952)) ;; (64 << 32) | 8
)
