;; tablegrow: hostile; grows a table far past its memory limit. Its argument
;; is a digit: 0 tries table.grow by 2^20 elements (8 MiB of references) 48
;; times whatever it returns and answers [grown, table.size]; 1 grows until
;; refused, then traps; 2 grows to the very limit (2^20, then 2^10 at a
;; time), fills the whole table with table.fill, tries memory.grow 1 and
;; answers [table.size, 1 if memory.grow was refused].
(module
  (memory (export "memory") 1)
  (table $t 0 funcref)
  (elem declare func $f)
  (func $f)
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
  (func (export "talon_call") (param $p i32) (param $n i32) (result i64)
    (local $mode i32) (local $i i32) (local $grown i32) (local $d i32) (local $second i32)
    (local.set $mode (i32.sub (i32.load8_u (call $args (local.get $p) (local.get $n))) (i32.const 48)))
    (if (i32.eq (local.get $mode) (i32.const 0))
      (then
        (loop $l
          (if (i32.ne (table.grow $t (ref.null func) (i32.const 1048576)) (i32.const -1))
            (then (local.set $grown (i32.add (local.get $grown) (i32.const 1)))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 48))))
        (local.set $second (table.size $t))))
    (if (i32.eq (local.get $mode) (i32.const 1))
      (then
        (loop $l
          (br_if $l (i32.ne (table.grow $t (ref.null func) (i32.const 1048576)) (i32.const -1))))
        (unreachable)))
    (if (i32.eq (local.get $mode) (i32.const 2))
      (then
        (loop $l
          (br_if $l (i32.ne (table.grow $t (ref.null func) (i32.const 1048576)) (i32.const -1))))
        (loop $l
          (br_if $l (i32.ne (table.grow $t (ref.null func) (i32.const 1024)) (i32.const -1))))
        (table.fill $t (i32.const 0) (ref.func $f) (table.size $t))
        (local.set $grown (table.size $t))
        (local.set $second (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))))
    (local.set $d (call $itoa (local.get $grown) (i32.const 23)))
    (i32.store8 (local.get $d) (i32.const 44))
    (local.set $d (call $itoa (local.get $second) (i32.add (local.get $d) (i32.const 1))))
    (i32.store16 (local.get $d) (i32.const 32093)) ;; "]}"
    (call $pack (i32.const 16) (i32.sub (i32.add (local.get $d) (i32.const 2)) (i32.const 16))))
)
