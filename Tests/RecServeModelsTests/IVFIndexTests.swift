import Foundation
import Testing

@testable import RecServeModels

/// The IVF index (SEARCH_IVF): recall against the exact scan on a model with planted clusters,
/// exactness when every list is probed, filters and strategies on what it returns, determinism.
@Suite struct IVFIndexTests {
  /// An MF model whose items sit around `clusters` random centres (plus noise), with item biases
  /// unless `biases` is false, and users near the centres too (as trained factors are).
  static func clusteredModel(
    items: Int, dim: Int, clusters: Int, users: Int = 60, biases: Bool = true, seed: UInt64 = 11
  ) throws -> MFModel {
    var rng = Xoshiro256(seed: seed)
    func normal() -> Float { Float(rng.nextGaussian()) }
    let scale = 1 / Float(dim).squareRoot()
    let centres = (0..<(clusters * dim)).map { _ in normal() }
    var itemFactors = [Float](repeating: 0, count: items * dim)
    for i in 0..<items {
      let c = rng.nextInt(below: clusters)
      for d in 0..<dim {
        itemFactors[i * dim + d] = (centres[c * dim + d] + 0.35 * normal()) * scale
      }
    }
    var userFactors = [Float](repeating: 0, count: users * dim)
    for u in 0..<users {
      let c = rng.nextInt(below: clusters)
      for d in 0..<dim { userFactors[u * dim + d] = centres[c * dim + d] + 0.5 * normal() }
    }
    return try MFModel(
      kind: biases ? "mf" : "bpr", userIds: (0..<users).map { "u\($0)" },
      itemIds: (0..<items).map { "i\($0)" }, dim: dim, globalMean: biases ? 3.5 : 0,
      userFactors: userFactors, itemFactors: itemFactors,
      userBias: (0..<users).map { _ in biases ? 0.1 * normal() : 0 },
      itemBias: (0..<items).map { _ in biases ? 0.2 * normal() : 0 },
      seen: (0..<users).map { u in (0..<30).map { Int32((u * 131 + $0 * 17) % items) } })
  }

  /// The user's query vector and offset.
  static func query(_ model: MFModel, user: Int) -> ([Float], Float) {
    var q = [Float](repeating: 0, count: model.dim)
    let offset = q.withUnsafeMutableBufferPointer {
      model.query(
        user: Int32(user), recentItems: UnsafeBufferPointer(start: nil, count: 0),
        into: $0.baseAddress!)
    }!
    return (q, offset)
  }

  static func exact(
    _ model: MFModel, user: Int, selection: BlockedScan.Selection, penalties: [Float]? = nil,
    skip: @escaping (Int32) -> Bool = { _ in false }
  ) throws -> [TopK.Entry] {
    var (q, offset) = query(model, user: user)
    return try q.withUnsafeBufferPointer { q in
      try penalties.withUnsafeBufferPointerIfAny { p in
        try BlockedScan.select(
          model: model, queries: q.baseAddress!, offsets: &offset, selections: [selection],
          penalties: p, skip: { _, item in skip(item) }, check: {})
      }
    }[0]
  }

  static func ivf(
    _ index: IVFIndex, _ model: MFModel, user: Int, selection: BlockedScan.Selection,
    nprobe: Int, penalties: [Float]? = nil, skip: @escaping (Int32) -> Bool = { _ in false }
  ) throws -> [TopK.Entry] {
    let (q, offset) = query(model, user: user)
    return try q.withUnsafeBufferPointer { q in
      try penalties.withUnsafeBufferPointerIfAny { p in
        try index.select(
          model: model, query: q.baseAddress!, offset: offset, selection: selection,
          penalties: p, nprobe: nprobe, skip: skip, check: {})
      }
    }
  }

  @Test func recallAtTheDefaultProbeIsHigh() throws {
    let model = try Self.clusteredModel(items: 40_000, dim: 32, clusters: 300, users: 200)
    let index = IVFIndex(model: model)
    #expect(index.lists == IVFIndex.defaultLists(items: 40_000))
    #expect(index.lists == 800)
    #expect(index.defaultProbe == 10)
    var hits = 0
    var lowProbeHits = 0
    for user in 0..<model.userCount {
      let truth = Set(try Self.exact(model, user: user, selection: .init(k: 10)).map(\.index))
      let got = try Self.ivf(
        index, model, user: user, selection: .init(k: 10), nprobe: index.defaultProbe)
      #expect(got.count == 10)
      hits += got.filter { truth.contains($0.index) }.count
      let low = try Self.ivf(index, model, user: user, selection: .init(k: 10), nprobe: 1)
      lowProbeHits += low.filter { truth.contains($0.index) }.count
    }
    let recall = Double(hits) / Double(10 * model.userCount)
    let lowRecall = Double(lowProbeHits) / Double(10 * model.userCount)
    #expect(recall >= 0.95, "recall@10 \(recall) at nprobe \(index.defaultProbe)")
    // One list is not enough: the floor above is earned by probing, not by the data being easy.
    #expect(lowRecall < recall, "recall@10 at nprobe 1: \(lowRecall)")
  }

  @Test(arguments: [true, false])
  func everyListProbedIsTheExactScan(biases: Bool) throws {
    let model = try Self.clusteredModel(
      items: 9_001, dim: 24, clusters: 40, users: 30, biases: biases, seed: 5)
    let index = IVFIndex(model: model, lists: 97)
    #expect(index.lists == 97)
    #expect(index.listSizes.reduce(0, +) == model.itemCount)
    let penalties = (0..<model.itemCount).map { Float(($0 * 13) % 7) * 0.1 }
    for user in 0..<model.userCount {
      let selection = BlockedScan.Selection(
        k: [1, 10, 100, 20_000][user % 4], penalty: user % 3 == 0 ? 0.5 : 0,
        minScore: user % 5 == 1 ? 4 : -.infinity)
      let excluded = Set((0..<200).map { Int32(($0 * 97 + user) % model.itemCount) })
      let exact = try Self.exact(
        model, user: user, selection: selection, penalties: penalties,
        skip: { excluded.contains($0) })
      let got = try Self.ivf(
        index, model, user: user, selection: selection, nprobe: index.lists,
        penalties: penalties, skip: { excluded.contains($0) })
      #expect(got.map(\.index) == exact.map(\.index), "user \(user)")
      #expect(got.map(\.score) == exact.map(\.score), "user \(user): scores differ")
    }
  }

  /// With few lists probed: what comes back is exactly the exact selection over the items of
  /// the probed lists, with the model's scores, filters and strategies applied.
  @Test func probedListsAreSelectedExactly() throws {
    let model = try Self.clusteredModel(items: 20_000, dim: 32, clusters: 100, users: 40)
    let index = IVFIndex(model: model, lists: 300)
    let penalties = (0..<model.itemCount).map { Float($0 % 11) * 0.05 }
    var all = [Float](repeating: 0, count: model.itemCount)
    for user in 0..<model.userCount {
      let (q, offset) = Self.query(model, user: user)
      let probed = q.withUnsafeBufferPointer { index.probe(query: $0.baseAddress!, nprobe: 6) }
      #expect(probed.count == 6)
      let inProbed = Set(probed.flatMap { index.items(inList: Int($0.index)) })
      // Excluded: the user's 10 best items overall and its training history.
      let seen = Set(model.seenItems(user: Int32(user)))
      let best = try Self.exact(model, user: user, selection: .init(k: 10))
      let excluded = seen.union(best.map(\.index))
      let selection = BlockedScan.Selection(
        k: 25, penalty: user % 2 == 0 ? 0.3 : 0, minScore: user % 3 == 0 ? 4.2 : -.infinity)
      let got = try Self.ivf(
        index, model, user: user, selection: selection, nprobe: 6, penalties: penalties,
        skip: { excluded.contains($0) })
      // The reference: exact scores of every item, filtered to the probed lists.
      q.withUnsafeBufferPointer { q in
        all.withUnsafeMutableBufferPointer {
          model.scoreAll(query: q.baseAddress!, offset: offset, into: $0.baseAddress!)
        }
      }
      var expected: [TopK.Entry] = []
      let blockScores = try Self.exact(
        model, user: user, selection: .init(k: model.itemCount, penalty: selection.penalty),
        penalties: penalties)
      for e in blockScores where inProbed.contains(e.index) && !excluded.contains(e.index) {
        if e.score >= selection.minScore { expected.append(e) }
      }
      expected = Array(expected.prefix(selection.k))
      #expect(got.map(\.index) == expected.map(\.index), "user \(user)")
      #expect(got.map(\.score) == expected.map(\.score), "user \(user)")
      for e in got {
        #expect(!excluded.contains(e.index))
        #expect(e.score >= selection.minScore)
        let i = Int(e.index)
        // Within the accuracy of a different summation order (sgemv), the model's score.
        let plain = all[i] - selection.penalty * penalties[i]
        #expect(abs(e.score - plain) <= 1e-4 * max(1, abs(plain)))
      }
    }
  }

  @Test func buildIsDeterministicForASeed() throws {
    let model = try Self.clusteredModel(items: 30_000, dim: 16, clusters: 80, users: 4)
    let a = IVFIndex(model: model, lists: 500, seed: 7)
    let b = IVFIndex(model: model, lists: 500, seed: 7, threads: 1)
    let c = IVFIndex(model: model, lists: 500, seed: 8)
    #expect(a.listSizes == b.listSizes)
    #expect((0..<a.lists).allSatisfy { a.items(inList: $0) == b.items(inList: $0) })
    #expect(a.listSizes != c.listSizes)
    // Few lists are left empty (points near a coarse border may all leave one), and none
    // swallows the catalog.
    #expect(a.listSizes.filter { $0 == 0 }.count <= a.lists / 50)
    #expect(a.listSizes.max()! < 30_000 / 500 * 8)
  }

  @Test func tinyCatalogs() throws {
    for items in [1, 2, 7, 65] {
      let model = try Self.clusteredModel(
        items: items, dim: 8, clusters: 3, users: 3, seed: UInt64(items))
      let index = IVFIndex(model: model)
      #expect(index.lists >= 1 && index.lists <= items)
      for user in 0..<3 {
        let exact = try Self.exact(model, user: user, selection: .init(k: 5))
        let got = try Self.ivf(
          index, model, user: user, selection: .init(k: 5), nprobe: index.lists)
        #expect(got.map(\.index) == exact.map(\.index))
      }
    }
  }

  @Test func checkRunsBetweenListsAndStopsTheSearch() throws {
    let model = try Self.clusteredModel(items: 5_000, dim: 16, clusters: 20, users: 2)
    let index = IVFIndex(model: model, lists: 50)
    struct Stop: Error {}
    var calls = 0
    let (q, offset) = Self.query(model, user: 0)
    #expect(throws: Stop.self) {
      try q.withUnsafeBufferPointer { q in
        _ = try index.select(
          model: model, query: q.baseAddress!, offset: offset, selection: .init(k: 10),
          penalties: nil, nprobe: 20, skip: { _ in false },
          check: {
            calls += 1
            if calls == 3 { throw Stop() }
          })
      }
    }
    #expect(calls == 3)
    #expect(index.work(nprobe: 20) > index.work(nprobe: 1))
    #expect(index.work(nprobe: 50) >= 5_000 * 16)
  }

  @Test func apportionSumsToTheTotal() {
    #expect(IVFIndex.apportion(10, sizes: [50, 30, 20]) == [5, 3, 2])
    #expect(IVFIndex.apportion(4, sizes: [100, 1, 0, 1]) == [2, 1, 0, 1])
    let sizes = (0..<63).map { 1_000 + ($0 * 7919) % 5_000 }
    #expect(IVFIndex.apportion(4_000, sizes: sizes).reduce(0, +) == 4_000)
  }
}

extension Optional where Wrapped == [Float] {
  fileprivate func withUnsafeBufferPointerIfAny<R>(
    _ body: (UnsafeBufferPointer<Float>?) throws -> R
  ) rethrows -> R {
    switch self {
    case .some(let a): return try a.withUnsafeBufferPointer { try body($0) }
    case .none: return try body(nil)
    }
  }
}
