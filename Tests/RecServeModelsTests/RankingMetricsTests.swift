import Foundation
import Testing

@testable import RecServeModels

private func close(_ a: Double?, _ b: Double, _ tol: Double = 1e-12) -> Bool {
  guard let a else { return false }
  return abs(a - b) <= tol
}

private let l2_3 = log2(3.0)

@Suite struct RankingMetricsTests {
  // MARK: - Hand-computed single users

  @Test func handComputedAtTwoCutoffs() throws {
    // Ranked 3, 1, 7, 5; relevant {1, 5, 9}: hits at ranks 2 and 4.
    let ranked: [Int32] = [3, 1, 7, 5]
    let rel: Set<Int32> = [1, 5, 9]
    let idcg3 = 1 + 1 / l2_3 + 1 / 2.0
    let s3 = try #require(RankingMetrics.scores(ranked: ranked, relevant: rel, k: 3))
    #expect(s3.hit == 1)
    #expect(close(s3.precision, 1.0 / 3))
    #expect(close(s3.recall, 1.0 / 3))
    #expect(close(s3.f1, 1.0 / 3))
    #expect(close(s3.ndcg, (1 / l2_3) / idcg3))
    #expect(close(s3.mrr, 0.5))
    #expect(close(s3.map, 0.5 / 3))  // (1/2) / min(3, 3)
    let s4 = try #require(RankingMetrics.scores(ranked: ranked, relevant: rel, k: 4))
    #expect(close(s4.precision, 0.5))
    #expect(close(s4.recall, 2.0 / 3))
    #expect(close(s4.f1, 2 * 0.5 * (2.0 / 3) / (0.5 + 2.0 / 3)))
    #expect(close(s4.ndcg, (1 / l2_3 + 1 / log2(5.0)) / idcg3))  // ideal has min(3, 4) = 3 terms
    #expect(close(s4.mrr, 0.5))
    #expect(close(s4.map, (0.5 + 0.5) / 3))  // P@2 = 1/2, P@4 = 2/4
    // The single-metric functions agree.
    #expect(RankingMetrics.ndcg(ranked: ranked, relevant: rel, k: 4) == s4.ndcg)
    #expect(RankingMetrics.hit(ranked: ranked, relevant: rel, k: 1) == 0)
    #expect(RankingMetrics.mrr(ranked: ranked, relevant: rel, k: 1) == 0)
    #expect(RankingMetrics.map(ranked: ranked, relevant: rel, k: 4) == s4.map)
    #expect(RankingMetrics.recall(ranked: ranked, relevant: rel, k: 4) == s4.recall)
    #expect(RankingMetrics.precision(ranked: ranked, relevant: rel, k: 4) == s4.precision)
    #expect(RankingMetrics.f1(ranked: ranked, relevant: rel, k: 4) == s4.f1)
  }

  @Test func moreRelevantThanK() throws {
    let s = try #require(
      RankingMetrics.scores(ranked: [1, 2, 8], relevant: [1, 2, 3, 4, 5], k: 2))
    #expect(s.precision == 1 && s.hit == 1 && s.mrr == 1)
    #expect(close(s.recall, 0.4))
    #expect(close(s.ndcg, 1))  // ideal DCG over min(5, 2) = 2 positions
    #expect(close(s.map, 1))  // (1 + 1) / min(5, 2)
    #expect(close(s.f1, 2 * 0.4 / 1.4))
  }

  @Test func fewerRelevantThanK() throws {
    let ranked: [Int32] = [9, 8, 1, 7, 6, 5, 4, 3, 2, 0]
    let s = try #require(RankingMetrics.scores(ranked: ranked, relevant: [1], k: 10))
    #expect(close(s.precision, 0.1) && s.recall == 1 && s.hit == 1)
    #expect(close(s.ndcg, 0.5))  // 1/log2(4) over an ideal of 1
    #expect(close(s.mrr, 1.0 / 3) && close(s.map, 1.0 / 3))
  }

  @Test func emptyRankedListScoresZero() throws {
    let s = try #require(RankingMetrics.scores(ranked: [Int32](), relevant: [1, 2], k: 5))
    #expect(s == .zero)
  }

  @Test func emptyRelevantSetIsSkipped() {
    #expect(RankingMetrics.scores(ranked: [1, 2, 3] as [Int32], relevant: [], k: 2) == nil)
    #expect(RankingMetrics.ndcg(ranked: [1] as [Int32], relevant: [], k: 2) == nil)
    let mean = RankingMetrics.mean([
      RankingMetrics.scores(ranked: [1] as [Int32], relevant: [1], k: 1),
      RankingMetrics.scores(ranked: [1] as [Int32], relevant: [], k: 1),
      RankingMetrics.scores(ranked: [2] as [Int32], relevant: [1], k: 1),
    ])
    #expect(mean?.hit == 0.5 && mean?.ndcg == 0.5)  // two users, the empty one skipped
    #expect(RankingMetrics.mean([RankingScores?]()) == nil)
  }

  @Test func kLargerThanTheList() throws {
    // Missing positions are misses (RecBole's lists are always K long).
    let s = try #require(RankingMetrics.scores(ranked: [1] as [Int32], relevant: [1], k: 5))
    #expect(close(s.precision, 0.2) && s.recall == 1 && s.ndcg == 1 && s.mrr == 1 && s.map == 1)
    #expect(close(s.f1, 2 * 0.2 / 1.2))
    let t = try #require(RankingMetrics.scores(ranked: [4, 1] as [Int32], relevant: [1, 2], k: 5))
    #expect(close(t.ndcg, (1 / l2_3) / (1 + 1 / l2_3)))
    #expect(close(t.map, 0.5 / 2))
  }

  @Test func tiesInScoresFollowTopKOrder() throws {
    // Items 1, 2 and 4 tie at 0.9; TopK puts the lower index first: 1, 2, 4, 0, 3.
    let scores: [Float] = [0.5, 0.9, 0.9, 0.1, 0.9]
    let ranked = scores.withUnsafeBufferPointer {
      TopK.select(scores: $0.baseAddress!, count: 5, k: 5).map { $0.index }
    }
    #expect(ranked == [1, 2, 4, 0, 3])
    let s = try #require(RankingMetrics.scores(ranked: ranked, relevant: [4], k: 3))
    #expect(close(s.ndcg, 0.5) && close(s.mrr, 1.0 / 3) && close(s.map, 1.0 / 3))
    #expect(RankingMetrics.hit(ranked: ranked, relevant: [4], k: 2) == 0)
    #expect(close(RankingMetrics.ndcg(ranked: ranked, relevant: [2], k: 2), 1 / l2_3))
    // Sampled rank uses the same order: a tied negative with a lower index ranks above.
    let negatives: [Int32] = [0, 1, 4]
    let rank2 = negatives.withUnsafeBufferPointer { nb in
      scores.withUnsafeBufferPointer {
        RankingMetrics.sampledRank(positive: (2, 0.9), negatives: nb, scores: $0.baseAddress!)
      }
    }
    #expect(rank2 == 2)  // 1 ties and has a lower index; 4 ties with a higher one
    let rankNaN = negatives.withUnsafeBufferPointer { nb in
      scores.withUnsafeBufferPointer {
        RankingMetrics.sampledRank(positive: (2, .nan), negatives: nb, scores: $0.baseAddress!)
      }
    }
    #expect(rankNaN == 4)
  }

  @Test func beyondAccuracyByHand() throws {
    #expect(RankingMetrics.coverage(lists: [[0, 1, 2], [1, 3]], k: 2, catalogSize: 10) == 0.3)
    let pop: [Int32] = [4, 1, 0, 2]
    let nov = pop.withUnsafeBufferPointer {
      RankingMetrics.novelty(ranked: [0, 1, 2], k: 2, popularity: $0, userCount: 4)
    }
    #expect(close(nov, (0 + 2) / 2.0))  // -log2(4/4), -log2(1/4)
    #expect(RankingMetrics.selfInformation(popularity: 0, userCount: 8) == 3)  // counted as 1
    let emb: [Float] = [1, 0, 0, 1, 1, 1, 0, 0]  // items: x, y, x+y, zero
    let ild = emb.withUnsafeBufferPointer {
      RankingMetrics.intraListDiversity(
        ranked: [0, 1, 2], k: 3, embeddings: $0.baseAddress!, dim: 2)
    }
    let c = 1 / 2.0.squareRoot()
    #expect(close(ild, ((1 - 0) + (1 - c) + (1 - c)) / 3))
    let withZero = emb.withUnsafeBufferPointer {
      RankingMetrics.intraListDiversity(ranked: [3, 0], k: 5, embeddings: $0.baseAddress!, dim: 2)
    }
    #expect(withZero == 1)
    let single = emb.withUnsafeBufferPointer {
      RankingMetrics.intraListDiversity(ranked: [0, 1], k: 1, embeddings: $0.baseAddress!, dim: 2)
    }
    #expect(single == nil)
  }

  // MARK: - Cross-check against RecBole's formulas in Python

  @Test func matchesRecBoleFormulasInPython() throws {
    guard let python = findPython3() else {
      print("SKIPPED matchesRecBoleFormulasInPython: python3 not found on PATH")
      return
    }
    var rng = Xoshiro256(seed: 2024, stream: 7)
    let ks = [1, 3, 5, 10, 20]
    var cases: [[String: Any]] = []
    var ranked: [[Int32]] = []
    var relevant: [Set<Int32>] = []
    for c in 0..<400 {
      let catalog = 5 + rng.nextInt(below: 60)
      // Lists shorter than the largest K now and then, and sometimes empty.
      let length = c % 17 == 0 ? 0 : 1 + rng.nextInt(below: min(catalog, 25))
      var items = Array(Int32(0)..<Int32(catalog))
      items.withUnsafeMutableBufferPointer { rng.shuffle($0) }
      let list = Array(items.prefix(length))
      var rel = Set<Int32>()
      let nRel = 1 + rng.nextInt(below: min(catalog, 15))
      for _ in 0..<nRel { rel.insert(Int32(rng.nextInt(below: catalog))) }
      ranked.append(list)
      relevant.append(rel)
      cases.append(["ranked": list.map { Int($0) }, "relevant": rel.sorted().map { Int($0) }])
    }
    let input: [String: Any] = ["ks": ks, "cases": cases]
    let out = try runPython(python, script: recBolePython, input: input)
    let perCase = try #require(out["per_case"] as? [[String: [Double]]])
    let means = try #require(out["mean"] as? [String: [Double]])
    #expect(perCase.count == cases.count)
    let names = ["hit", "precision", "recall", "f1", "ndcg", "mrr", "map"]
    func pick(_ s: RankingScores, _ name: String) -> Double {
      switch name {
      case "hit": return s.hit
      case "precision": return s.precision
      case "recall": return s.recall
      case "f1": return s.f1
      case "ndcg": return s.ndcg
      case "mrr": return s.mrr
      default: return s.map
      }
    }
    var mismatches = 0
    for (x, k) in ks.enumerated() {
      var perUser: [RankingScores?] = []
      for c in 0..<cases.count {
        let s = try #require(RankingMetrics.scores(ranked: ranked[c], relevant: relevant[c], k: k))
        perUser.append(s)
        for name in names where !close(pick(s, name), perCase[c][name]![x], 1e-12) {
          mismatches += 1
          if mismatches < 10 {
            Issue.record(
              "case \(c) k \(k) \(name): swift \(pick(s, name)) python \(perCase[c][name]![x])")
          }
        }
      }
      let mean = try #require(RankingMetrics.mean(perUser))
      for name in names {
        #expect(close(pick(mean, name), means[name]![x], 1e-12), "mean \(name)@\(k)")
      }
    }
    #expect(mismatches == 0)
  }

  // MARK: - Splits

  @Test func leaveLastOutPutsEachUsersLatestInTest() throws {
    let rows = [
      InteractionRow(user: "u1", item: "i1", timestamp: 5),
      InteractionRow(user: "u2", item: "i1", timestamp: 3),
      InteractionRow(user: "u1", item: "i2", timestamp: 9),
      InteractionRow(user: "u3", item: "i4", timestamp: 10),
      InteractionRow(user: "u1", item: "i3", timestamp: 7),
      InteractionRow(user: "u3", item: "i5", timestamp: 10),
      InteractionRow(user: "u3", item: "i6", timestamp: 2),
    ]
    let data = try Interactions(rows: rows)
    let (train, test) = data.leaveLastOutSplit(seed: 1)
    #expect(train.count == 5 && test.count == 2)
    func pairs(_ d: Interactions) -> [String] {
      (0..<d.count).map { d.userIds[Int(d.users[$0])] + ":" + d.itemIds[Int(d.items[$0])] }
    }
    let testPairs = pairs(test)
    #expect(testPairs.first == "u1:i2")  // file order: u1's row comes before u3's
    #expect(testPairs.count == 2 && ["u3:i4", "u3:i5"].contains(testPairs[1]))
    #expect(!pairs(train).contains("u1:i2") && pairs(train).contains("u2:i1"))
    #expect(Set(pairs(train)).union(testPairs).count == 7)
    // Deterministic for a seed; the tie at t=10 goes either way across seeds.
    #expect(pairs(data.leaveLastOutSplit(seed: 1).test) == testPairs)
    var tiedPicks = Set<String>()
    for seed in UInt64(0)..<32 {
      tiedPicks.insert(pairs(data.leaveLastOutSplit(seed: seed).test)[1])
    }
    #expect(tiedPicks == ["u3:i4", "u3:i5"])

    // On generated data: every user with >= 2 rows has exactly its latest row held out.
    let syn = smallSynthetic()
    let (tr, te) = syn.leaveLastOutSplit(seed: 3)
    #expect(tr.count + te.count == syn.count)
    var latest = [String: Int64]()
    var counts = [String: Int]()
    for r in 0..<syn.count {
      let u = syn.userIds[Int(syn.users[r])]
      latest[u] = max(latest[u] ?? .min, syn.timestamps[r])
      counts[u, default: 0] += 1
    }
    #expect(te.count == counts.values.filter { $0 >= 2 }.count)
    for r in 0..<te.count { #expect(te.timestamps[r] == latest[te.userIds[Int(te.users[r])]]) }
    #expect(te.timestamps == syn.leaveLastOutSplit(seed: 3).test.timestamps)
  }

  @Test func itemsByUserIsSortedDistinctAndFiltered() throws {
    let data = try Interactions(rows: [
      InteractionRow(user: "a", item: "x", rating: 5),
      InteractionRow(user: "a", item: "y", rating: 2),
      InteractionRow(user: "b", item: "y", rating: 4),
      InteractionRow(user: "a", item: "x", rating: 4),
      InteractionRow(user: "a", item: "z", rating: 4),
    ])
    #expect(data.itemsByUser() == [[0, 1, 2], [1]])
    #expect(data.itemsByUser(minRating: 4) == [[0, 2], [1]])
  }

  // MARK: - Evaluator

  @Test func evaluatorByHand() throws {
    let model = FixedModel()
    let test = try Interactions(rows: [
      InteractionRow(user: "a", item: "i2"), InteractionRow(user: "a", item: "i1"),  // i1 seen
      InteractionRow(user: "b", item: "i3"), InteractionRow(user: "b", item: "i9"),  // i9 unknown
      InteractionRow(user: "z", item: "i0"),  // unknown user
      InteractionRow(user: "c", item: "i1"),  // only a seen item
    ])
    for threads in [1, 2] {
      let e = RankingEvaluator.evaluate(
        model: model, train: nil, test: test,
        config: RankingEvaluationConfig(ks: [2], sampled: true, seed: 9, threads: threads))
      #expect(e.users == 2 && e.unknownUsers == 1 && e.usersWithoutTestItems == 1)
      #expect(e.unknownTestItems == 1 && e.seenTestItems == 2 && e.sampledPairs == 2)
      // a: ranked [3, 2] (1 is seen), relevant {2}; b: ranked [0, 2] (tie, lower first), {3}.
      let s = try #require(e.full[2])
      #expect(s.hit == 0.5 && s.precision == 0.25 && s.recall == 0.5 && s.mrr == 0.25)
      #expect(close(s.ndcg, 0.5 / l2_3) && s.map == 0.25 && close(s.f1, 1.0 / 3))
      #expect(e.coverage[2] == 0.6)  // {3, 2, 0} of 5
      #expect(close(e.novelty[2], 0.75 * l2_3))  // a: log2 3; b: (0 + log2 3) / 2
      #expect(close(e.diversity[2], 1 - 1 / 2.0.squareRoot()))
      // Sampled: a's negatives are {0, 3, 4} (all available), rank 2; b's {0, 1, 2, 4}, rank 4.
      let sm = try #require(e.sampled[2])
      #expect(sm.hit == 0.5 && close(sm.ndcg, 0.5 / l2_3) && close(e.sampledMRR, 0.375))
      let m = e.metrics
      #expect(m["ndcg@2"] == s.ndcg && m["hr@2"] == 0.5 && m["coverage@2"] == 0.6)
      #expect(m["sampled_hr@2"] == 0.5 && m["sampled_mrr"] == e.sampledMRR)
      #expect(m.keys.contains("ild@2") && m.keys.contains("novelty@2") && m["f1@2"] != nil)
    }
    // A `train` set replaces the model's history: with a's history empty, i1 is relevant again.
    let train = try Interactions(rows: [InteractionRow(user: "b", item: "i4")])
    let e = RankingEvaluator.evaluate(
      model: model, train: train, test: test, config: RankingEvaluationConfig(ks: [1]))
    #expect(e.seenTestItems == 0 && e.users == 3)
    // a ranks 1 and 3 (0.9 tie) first: hit on i1. b ranks 0 first (4 is seen). c ranks 1: hit.
    #expect(close(e.full[1]?.hit, 2.0 / 3))
  }

  @Test func sampledNegativesAreUnseenDistinctAndSeeded() {
    let I = 50
    let excluded = UnsafeMutablePointer<Int32>.allocate(capacity: I)
    defer { excluded.deallocate() }
    excluded.initialize(repeating: -1, count: I)
    for i in stride(from: 0, to: I, by: 3) { excluded[i] = 7 }
    var out = [Int32]()
    var rng = Xoshiro256(seed: 1)
    RankingEvaluator.sampleNegatives(
      count: 10, itemCount: I, excluded: excluded, stamp: 7, rng: &rng, into: &out)
    #expect(out.count == 10 && Set(out).count == 10 && out.allSatisfy { $0 % 3 != 0 })
    // Fewer available than asked: all of them.
    excluded.initialize(repeating: -1, count: I)
    for i in 0..<45 { excluded[i] = 8 }
    RankingEvaluator.sampleNegatives(
      count: 100, itemCount: I, excluded: excluded, stamp: 8, rng: &rng, into: &out)
    #expect(Set(out) == Set(45..<50))
  }

  @Test func trainedMFBeatsRandomRanking() throws {
    // Which items a user interacts with is what ranking is judged on, so MF is trained
    // pointwise on implicit feedback: every training interaction as 1 and, per user, twice as
    // many sampled unobserved items as 0.
    let data = try SyntheticData.generate(
      SyntheticData.Config(
        users: 400, items: 300, seed: 11, dim: 4, density: 0.08, clusters: 6, noise: 0.2))
    let (train, test) = data.leaveLastOutSplit(seed: 5)
    var rows = [InteractionRow]()
    var rng = Xoshiro256(seed: 8)
    let byUser = data.itemsByUser()
    for r in 0..<train.count {
      rows.append(
        InteractionRow(
          user: train.userIds[Int(train.users[r])], item: train.itemIds[Int(train.items[r])]))
    }
    for u in 0..<data.userCount {
      var added = 0
      while added < 2 * byUser[u].count {
        let i = Int32(rng.nextInt(below: data.itemCount))
        if RankingEvaluator.binarySearch(byUser[u], i) { continue }
        rows.append(
          InteractionRow(user: data.userIds[u], item: data.itemIds[Int(i)], rating: 0))
        added += 1
      }
    }
    let implicit = try Interactions(rows: rows)
    let model = try MFTrainer.train(implicit, config: quickConfig())
    let config = RankingEvaluationConfig(ks: [10], sampled: true, seed: 3, threads: 2)
    let mf = RankingEvaluator.evaluate(model: model, train: train, test: test, config: config)
    let random = RankingEvaluator.evaluate(
      model: RandomScores(model), train: train, test: test, config: config)
    let mfNDCG = try #require(mf.full[10]?.ndcg)
    let rndNDCG = try #require(random.full[10]?.ndcg)
    #expect(mf.users > 300 && mf.users == random.users)
    #expect(mfNDCG > 2.5 * rndNDCG, "NDCG@10: MF \(mfNDCG) vs random \(rndNDCG)")
    let mfSampled = try #require(mf.sampled[10]?.hit)
    let rndSampled = try #require(random.sampled[10]?.hit)
    #expect(mfSampled > 1.8 * rndSampled, "sampled HR@10: MF \(mfSampled) vs \(rndSampled)")
    // Random sampled HR@10 is about 10/101.
    #expect(abs(rndSampled - 10.0 / 101) < 0.05)
    // Same numbers on one thread.
    let one = RankingEvaluator.evaluate(
      model: model, train: train, test: test,
      config: RankingEvaluationConfig(ks: [10], sampled: true, seed: 3, threads: 1))
    #expect(one == mf)
    print(
      "MF vs random: NDCG@10 \(mfNDCG) vs \(rndNDCG), sampled HR@10 \(mfSampled) vs \(rndSampled)")
  }
}

// MARK: - Test models

/// Three users, five items, fixed scores (with a tie), 2-d item embeddings.
private final class FixedModel: RecommendationModel, @unchecked Sendable {
  let kind = "fixed"
  let dim = 2
  let userIds = ["a", "b", "c"]
  let itemIds = ["i0", "i1", "i2", "i3", "i4"]
  var userCount: Int { 3 }
  var itemCount: Int { 5 }
  let table: [[Float]] = [
    [0.1, 0.9, 0.5, 0.9, 0.3],
    [0.8, 0.2, 0.8, 0.1, 0.0],
    [0.0, 0.9, 0.1, 0.2, 0.3],
  ]
  let seen: [UnsafeMutableBufferPointer<Int32>]
  let pop: UnsafeMutableBufferPointer<Int32>
  let factors: UnsafeMutablePointer<Float>

  init() {
    seen = [[1], [], [1]].map { (s: [Int32]) in
      let b = UnsafeMutableBufferPointer<Int32>.allocate(capacity: max(1, s.count))
      _ = b.initialize(from: s)
      return UnsafeMutableBufferPointer(rebasing: b[0..<s.count])
    }
    pop = .allocate(capacity: 5)
    _ = pop.initialize(from: [3, 1, 1, 1, 1])
    factors = .allocate(capacity: 10)
    factors.initialize(from: [1, 0, 0, 1, 1, 1, 0, 2, -1, 0], count: 10)
  }

  deinit {
    for s in seen { s.baseAddress?.deallocate() }
    pop.deallocate()
    factors.deallocate()
  }

  func userIndex(_ id: String) -> Int32? { userIds.firstIndex(of: id).map(Int32.init) }
  func itemIndex(_ id: String) -> Int32? { itemIds.firstIndex(of: id).map(Int32.init) }
  func predict(user: Int32?, item: Int32?) -> Float {
    guard let user, let item else { return 0 }
    return table[Int(user)][Int(item)]
  }
  func scoreAll(user: Int32, into: UnsafeMutablePointer<Float>) {
    for i in 0..<5 { into[i] = table[Int(user)][i] }
  }
  func seenItems(user: Int32) -> UnsafeBufferPointer<Int32> { UnsafeBufferPointer(seen[Int(user)]) }
  var itemPopularity: UnsafeBufferPointer<Int32> { UnsafeBufferPointer(pop) }
  var itemFactors: UnsafePointer<Float> { UnsafePointer(factors) }
}

/// Another model's ids, history and embeddings with uniformly random scores (deterministic per
/// user), as a ranking baseline.
private final class RandomScores: RecommendationModel, @unchecked Sendable {
  let base: any RecommendationModel
  init(_ base: any RecommendationModel) { self.base = base }
  var kind: String { "random" }
  var dim: Int { base.dim }
  var userCount: Int { base.userCount }
  var itemCount: Int { base.itemCount }
  var userIds: [String] { base.userIds }
  var itemIds: [String] { base.itemIds }
  func userIndex(_ id: String) -> Int32? { base.userIndex(id) }
  func itemIndex(_ id: String) -> Int32? { base.itemIndex(id) }
  func predict(user: Int32?, item: Int32?) -> Float { 0 }
  func scoreAll(user: Int32, into: UnsafeMutablePointer<Float>) {
    var rng = Xoshiro256(seed: 77, stream: UInt64(user))
    for i in 0..<itemCount { into[i] = rng.nextFloat() }
  }
  func seenItems(user: Int32) -> UnsafeBufferPointer<Int32> { base.seenItems(user: user) }
  var itemPopularity: UnsafeBufferPointer<Int32> { base.itemPopularity }
  var itemFactors: UnsafePointer<Float> { base.itemFactors }
}

// MARK: - Python helper

private func findPython3() -> String? {
  let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
  for dir in path.split(separator: ":") {
    let p = dir + "/python3"
    if FileManager.default.isExecutableFile(atPath: String(p)) { return String(p) }
  }
  return nil
}

/// Writes `script` and `input` (as JSON) to a temporary directory, runs `python3 script input`,
/// and parses the JSON object it prints.
private func runPython(_ python: String, script: String, input: [String: Any]) throws
  -> [String: Any]
{
  let dir = TempDir()
  let scriptPath = dir.write("recbole_metrics.py", script)
  let inputPath = dir.file("input.json")
  try JSONSerialization.data(withJSONObject: input).write(to: URL(fileURLWithPath: inputPath))
  let p = Process()
  p.executableURL = URL(fileURLWithPath: python)
  p.arguments = [scriptPath, inputPath]
  let out = Pipe()
  let err = Pipe()
  p.standardOutput = out
  p.standardError = err
  try p.run()
  let data = out.fileHandleForReading.readDataToEndOfFile()
  let errData = err.fileHandleForReading.readDataToEndOfFile()
  p.waitUntilExit()
  guard p.terminationStatus == 0 else {
    throw PythonFailed(message: String(decoding: errData, as: UTF8.self))
  }
  guard let obj = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
    throw PythonFailed(message: "not a JSON object: \(String(decoding: data, as: UTF8.self))")
  }
  return obj
}

private struct PythonFailed: Error, CustomStringConvertible {
  var message: String
  var description: String { "python3 failed: \(message)" }
}

/// RecBole's top-k metrics (recbole/evaluator/metrics.py), transcribed row by row into plain
/// Python: each user's `pos_index` row has max(ks) columns (positions past the ranked list are
/// misses) and `pos_len` is the number of relevant items. F1 is the per-user harmonic mean of
/// precision and recall (RecBole has none). Prints per-case values for every k and the means.
private let recBolePython = #"""
  import json, math, sys

  def metrics_row(pos, pos_len):
      K = len(pos)
      cum = []
      c = 0
      for p in pos:
          c += 1 if p else 0
          cum.append(c)
      ar = list(range(1, K + 1))
      hit = [1.0 if x > 0 else 0.0 for x in cum]
      # MRR: argmax of the row; result[idx:] = 1/(idx+1) if that position is a hit, else 0.
      idx = pos.index(True) if True in pos else 0
      mrr = [0.0] * K
      for j in range(idx, K):
          mrr[j] = 1.0 / (idx + 1) if pos[idx] else 0.0
      # MAP
      pre = [cum[j] / ar[j] for j in range(K)]
      sum_pre = []
      s = 0.0
      for j in range(K):
          s += pre[j] * (1.0 if pos[j] else 0.0)
          sum_pre.append(s)
      lens = min(pos_len, K)
      ranges = list(ar)
      for j in range(lens, K):
          ranges[j] = ranges[lens - 1]
      mapv = [sum_pre[j] / ranges[j] for j in range(K)]
      recall = [cum[j] / pos_len for j in range(K)]
      # NDCG
      idcg = []
      s = 0.0
      for j in range(K):
          s += 1.0 / math.log2(ar[j] + 1)
          idcg.append(s)
      for j in range(lens, K):
          idcg[j] = idcg[lens - 1]
      dcg = []
      s = 0.0
      for j in range(K):
          s += (1.0 / math.log2(ar[j] + 1)) if pos[j] else 0.0
          dcg.append(s)
      ndcg = [dcg[j] / idcg[j] for j in range(K)]
      precision = [cum[j] / ar[j] for j in range(K)]
      f1 = [(2 * precision[j] * recall[j] / (precision[j] + recall[j]))
            if precision[j] + recall[j] > 0 else 0.0 for j in range(K)]
      return {"hit": hit, "precision": precision, "recall": recall, "f1": f1,
              "ndcg": ndcg, "mrr": mrr, "map": mapv}

  def main():
      with open(sys.argv[1]) as f:
          inp = json.load(f)
      ks = inp["ks"]
      K = max(ks)
      per_case = []
      sums = None
      for case in inp["cases"]:
          rel = set(case["relevant"])
          ranked = case["ranked"][:K]
          pos = [item in rel for item in ranked] + [False] * (K - len(ranked))
          row = metrics_row(pos, len(rel))
          per_case.append({name: [row[name][k - 1] for k in ks] for name in row})
          if sums is None:
              sums = {name: [0.0] * len(ks) for name in row}
          for name in row:
              for x, k in enumerate(ks):
                  sums[name][x] += row[name][k - 1]
      n = len(inp["cases"])
      mean = {name: [v / n for v in vals] for name, vals in sums.items()}
      print(json.dumps({"per_case": per_case, "mean": mean}))

  main()
  """#

/// The test models rank known users only (what evaluation asks of them), from a table of scores
/// (`scoreAll(user:)`): a user's query carries the user's index in its first component, and the
/// batch and per-item scores are read from that user's row.
private protocol UsersOnly: RecommendationModel {}

extension UsersOnly {
  var isSequential: Bool { false }
  func query(
    user: Int32?, recentItems: UnsafeBufferPointer<Int32>, into vector: UnsafeMutablePointer<Float>
  ) -> Float? {
    guard let user else { return nil }
    vector.update(repeating: 0, count: dim)
    vector[0] = Float(user)
    return 0
  }
  /// The row of scores of the user a query stands for.
  func row(_ query: UnsafePointer<Float>) -> [Float] {
    var all = [Float](repeating: 0, count: itemCount)
    all.withUnsafeMutableBufferPointer { scoreAll(user: Int32(query[0]), into: $0.baseAddress!) }
    return all
  }
  func scoreAll(query: UnsafePointer<Float>, offset: Float, into out: UnsafeMutablePointer<Float>) {
    for (i, s) in row(query).enumerated() { out[i] = s + offset }
  }
  func scoreItems(
    query: UnsafePointer<Float>, offset: Float, items: UnsafeBufferPointer<Int32>,
    into out: UnsafeMutablePointer<Float>
  ) {
    let all = row(query)
    for (k, i) in items.enumerated() { out[k] = all[Int(i)] + offset }
  }
  func queryWork(user: Int32?, recentCount: Int) -> Int { 0 }
  func scoreBlock(
    queries: UnsafePointer<Float>, count: Int, offsets: UnsafePointer<Float>, items: Range<Int>,
    into out: UnsafeMutablePointer<Float>, stride: Int
  ) {
    for j in 0..<stride {
      let all = j < count ? row(queries + j * dim) : []
      for i in items {
        out[(i - items.lowerBound) * stride + j] = j < count ? all[i] + offsets[j] : 0
      }
    }
  }
}

extension FixedModel: UsersOnly {}
extension RandomScores: UsersOnly {}
