;; fileout: a tool answering {"ok":"done","file": <its arguments>}: the file the
;; test passes as the arguments (its name, type and base64 data) comes back as
;; the tool's file.
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
  (data (i32.const 16) "{\"ok\":\"done\",\"file\":")
  (func (export "talon_call") (param $p i32) (param $n i32) (result i64)
    (local $s i32)
    ;; Overwrite the 20 bytes before the arguments (the tool's name is
    ;; long enough) so that [s, p+n) reads {"ok":"done","file":<args>}.
    (local.set $s (i32.sub (call $args (local.get $p) (local.get $n)) (i32.const 20)))
    (memory.copy (local.get $s) (i32.const 16) (i32.const 20))
    (call $pack (local.get $s) (i32.sub (i32.add (local.get $p) (local.get $n)) (local.get $s))))
)
