import Testing

@testable import RecServeModels

@Test func xoshiroIsDeterministic() {
  var a = Xoshiro256(seed: 42)
  var b = Xoshiro256(seed: 42)
  var c = Xoshiro256(seed: 43)
  let xa = (0..<8).map { _ in a.next() }
  let xb = (0..<8).map { _ in b.next() }
  let xc = (0..<8).map { _ in c.next() }
  #expect(xa == xb)
  #expect(xa != xc)
  var r = Xoshiro256(seed: 1)
  for _ in 0..<1000 {
    let f = r.nextFloat()
    #expect(f >= 0 && f < 1)
    let k = r.nextInt(below: 7)
    #expect(k >= 0 && k < 7)
  }
}
