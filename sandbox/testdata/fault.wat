;; fault: hostile; its argument is a digit choosing a way to lie to the host.
(module
  (import "talon" "http_request" (func $http (param i32 i32) (result i32)))
  (import "talon" "result_read" (func $read (param i32 i32) (result i32)))
  (import "talon" "log" (func $log (param i32 i32 i32)))
  (import "talon" "has_secret" (func $has (param i32 i32) (result i32)))
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
  ;; args returns the address of the "args" value in the input
  ;; {"tool":"<name>","args":<value>}: the byte after the second colon.
  (func $args (param $p i32) (param $n i32) (result i32)
    (local $i i32) (local $c i32)
    (local.set $i (local.get $p))
    (block $done
      (loop $l
        (br_if $done (i32.ge_u (local.get $i) (i32.add (local.get $p) (local.get $n))))
        (if (i32.eq (i32.load8_u (local.get $i)) (i32.const 58))
          (then
            (local.set $c (i32.add (local.get $c) (i32.const 1)))
            (if (i32.eq (local.get $c) (i32.const 2))
              (then (return (i32.add (local.get $i) (i32.const 1)))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $l)))
    (i32.const 0))
  ;; itoa writes n in decimal at d and returns the address after it.
  (func $itoa (param $n i32) (param $d i32) (result i32)
    (local $div i32) (local $started i32)
    (local.set $div (i32.const 1000000000))
    (block $done
      (loop $l
        (if (i32.or (local.get $started)
              (i32.or (i32.ge_u (local.get $n) (local.get $div)) (i32.eq (local.get $div) (i32.const 1))))
          (then
            (i32.store8 (local.get $d) (i32.add (i32.const 48) (i32.div_u (local.get $n) (local.get $div))))
            (local.set $d (i32.add (local.get $d) (i32.const 1)))
            (local.set $started (i32.const 1))))
        (local.set $n (i32.rem_u (local.get $n) (local.get $div)))
        (br_if $done (i32.eq (local.get $div) (i32.const 1)))
        (local.set $div (i32.div_u (local.get $div) (i32.const 10)))
        (br $l)))
    (local.get $d))
  (data (i32.const 16) "{\"ok\":[")
  (data (i32.const 64) "{\"ok\":0}")
  (data (i32.const 96) "not json")
  (func (export "talon_call") (param $p i32) (param $n i32) (result i64)
    (block $ok
      (block $c8 (block $c7 (block $c6 (block $c5 (block $c4 (block $c3 (block $c2 (block $c1 (block $c0
        (br_table $c0 $c1 $c2 $c3 $c4 $c5 $c6 $c7 $c8 $ok
          (i32.sub (i32.load8_u (call $args (local.get $p) (local.get $n))) (i32.const 48))))
        ;; 0: request range past the end of memory
        (drop (call $http (i32.const 0xFFFFFF00) (i32.const 0x100))) (br $ok))
        ;; 1: request length above the 8 MiB cap
        (drop (call $http (i32.const 0) (i32.const 0x01000000))) (br $ok))
        ;; 2: result_read into a range outside memory
        (drop (call $read (i32.const 0xFFFF0000) (i32.const 16))) (br $ok))
        ;; 3: log a range that wraps around
        (call $log (i32.const 1) (i32.const 0xFFFFFFF0) (i32.const 0x100)) (br $ok))
        ;; 4: has_secret with a name above its cap
        (drop (call $has (i32.const 0) (i32.const 100000))) (br $ok))
        ;; 5: output outside memory
        (return (call $pack (i32.const 0xFFFF0000) (i32.const 10))))
        ;; 6: output that is not JSON
        (return (call $pack (i32.const 96) (i32.const 8))))
        ;; 7: log level out of range
        (call $log (i32.const 9) (i32.const 0) (i32.const 1)) (br $ok))
      ;; 8: result_read with a length running past the end of memory
      (drop (call $read (i32.const 100) (i32.const 0xFFFFFFFF))))
    (call $pack (i32.const 64) (i32.const 8)))
)
