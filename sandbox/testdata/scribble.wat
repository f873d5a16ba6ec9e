;; scribble: hostile; grows its memory to 12 pages, checks that all of it is
;; zero but for its own data and its input, then writes 0xAB over all of it.
;; An instance made on a recycled memory must still answer "clean".
(module

  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (func (export "talon_abi_version_1"))
  ;; talon_alloc: bump allocator, grows memory when needed; 0 on failure.
  (func $alloc (export "talon_alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (local.get $p) (local.get $n)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (memory.grow (i32.add (i32.shr_u (local.get $n) (i32.const 16)) (i32.const 1))) (i32.const -1))
          (then (return (i32.const 0))))))
    (local.get $p))
  ;; pack returns (ptr << 32) | len.
  (func $pack (param $p i32) (param $n i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $p)) (i64.const 32)) (i64.extend_i32_u (local.get $n))))
  (data (i32.const 0) "{\"ok\":\"clean\"}")
  (data (i32.const 16) "{\"ok\":\"dirty\"}")
  ;; zero reports whether the bytes [from, to) are all zero.
  (func $zero (param $from i32) (param $to i32) (result i32)
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $from) (local.get $to)))
        (if (i32.load8_u (local.get $from)) (then (return (i32.const 0))))
        (local.set $from (i32.add (local.get $from) (i32.const 1)))
        (br $l)))
    (i32.const 1))
  (func (export "talon_call") (param $p i32) (param $n i32) (result i64)
    (local $end i32) (local $clean i32)
    (if (i32.lt_u (memory.size) (i32.const 12))
      (then (drop (memory.grow (i32.sub (i32.const 12) (memory.size))))))
    (local.set $end (i32.mul (memory.size) (i32.const 65536)))
    (local.set $clean
      (i32.and
        (call $zero (i32.const 32) (local.get $p))
        (call $zero (i32.add (local.get $p) (local.get $n)) (local.get $end))))
    (memory.fill (i32.const 32) (i32.const 0xAB) (i32.sub (local.get $p) (i32.const 32)))
    (memory.fill (i32.add (local.get $p) (local.get $n)) (i32.const 0xAB)
      (i32.sub (local.get $end) (i32.add (local.get $p) (local.get $n))))
    (if (result i64) (local.get $clean)
      (then (call $pack (i32.const 0) (i32.const 14)))
      (else (call $pack (i32.const 16) (i32.const 14)))))
)
