import Foundation
import Testing

@testable import RecServeModels

@Suite struct ImplicitModelsTests {
  /// Planted clusters, small enough to train in well under a second.
  static func data() throws -> Interactions {
    try SyntheticData.generate(
      SyntheticData.Config(users: 800, items: 300, seed: 7, density: 0.08, clusters: 6))
  }

  static func bpr(threads: Int = 1, epochs: Int = 30, seed: UInt64 = 3) -> BPRConfig {
    BPRConfig(
      dim: 16, epochs: epochs, learningRate: 0.05, regularization: 0.01, seed: seed,
      threads: threads)
  }

  static func als(threads: Int = 1, iterations: Int = 8) -> ALSConfig {
    ALSConfig(
      dim: 16, iterations: iterations, regularization: 0.1, alpha: 10, seed: 3, threads: threads)
  }

  /// NDCG@10 by full ranking over the items not in the user's training rows (relevant: the
  /// held-out rows rated at least `threshold`, or all).
  static func ndcg(
    _ model: MFModel, train: Interactions, test: Interactions, threshold: Float? = nil
  ) -> Double {
    let e = RankingEvaluator.evaluate(
      model: model, train: train, test: test,
      config: RankingEvaluationConfig(ks: [10], threads: 1, relevanceThreshold: threshold))
    return e.full[10]?.ndcg ?? 0
  }

  /// The same model's seen CSR and ids with other factors: dim 1 and item factor = popularity
  /// (popularity ranking) or random.
  static func baseline(_ model: MFModel, popularity: Bool) throws -> MFModel {
    var rng = Xoshiro256(seed: 99)
    let item = (0..<model.itemCount).map { i in
      popularity ? Float(model.itemPopularity[i]) : rng.nextFloat()
    }
    let seen = (0..<model.userCount).map { Array(model.seenItems(user: Int32($0))) }
    return try MFModel(
      kind: "bpr", userIds: model.userIds, itemIds: model.itemIds, dim: 1, globalMean: 0,
      userFactors: [Float](repeating: 1, count: model.userCount), itemFactors: item,
      userBias: [Float](repeating: 0, count: model.userCount),
      itemBias: [Float](repeating: 0, count: model.itemCount), seen: seen)
  }

  /// SyntheticData picks which items a user rates by popularity alone; its planted clusters
  /// decide the ratings. So the implicit signal that carries the clusters is "rated at least 4":
  /// train on those positives and score the held-out (last) item when it is rated at least 4.
  /// Popularity is the strongest signal in which items get rated here, so this one only checks
  /// a clear margin over random; `beatsPopularityOnPlantedClusters` checks both baselines.
  @Test(arguments: ["bpr", "als"])
  func learnsSyntheticDataClusters(kind: String) throws {
    let (train, test) = try Self.data().leaveLastOutSplit(seed: 1)
    let config: ImplicitModelConfig =
      kind == "bpr" ? .bpr(Self.bpr(threads: 2)) : .als(Self.als(threads: 2))
    let model = try #require(
      try trainImplicit(data: train, config: config, threshold: 4) as? MFModel)
    #expect(model.kind == kind)
    let score = Self.ndcg(model, train: train, test: test, threshold: 4)
    let random = Self.ndcg(
      try Self.baseline(model, popularity: false), train: train, test: test, threshold: 4)
    #expect(score > 3 * random, "\(kind): ndcg@10 \(score) vs random \(random)")
  }

  /// Implicit data whose interactions follow planted clusters: 6 user clusters, each with its
  /// own 50 of 300 items; a user's items come from its cluster 85% of the time (Zipf-skewed
  /// inside the cluster) and from anywhere otherwise; random timestamps.
  static func plantedClusters() throws -> Interactions {
    var rng = Xoshiro256(seed: 11)
    let K = 6
    let perCluster = 50
    var rows: [InteractionRow] = []
    for u in 0..<600 {
      let k = u % K
      var chosen = Set<Int>()
      let n = 8 + rng.nextInt(below: 16)
      while chosen.count < n {
        if rng.nextDouble() < 0.85 {
          let r = Int(Double(perCluster) * rng.nextDouble() * rng.nextDouble())  // skewed
          chosen.insert(k * perCluster + r)
        } else {
          chosen.insert(rng.nextInt(below: K * perCluster))
        }
      }
      for i in chosen.sorted() {
        rows.append(
          InteractionRow(
            user: "u\(u)", item: "i\(i)", rating: 1, timestamp: Int64(rng.nextInt(below: 1_000_000))
          ))
      }
    }
    return try Interactions(rows: rows, source: "planted clusters")
  }

  @Test(arguments: ["bpr", "als"])
  func beatsRandomAndPopularityOnPlantedClusters(kind: String) throws {
    let (train, test) = try Self.plantedClusters().leaveLastOutSplit(seed: 1)
    let config: ImplicitModelConfig =
      kind == "bpr" ? .bpr(Self.bpr(threads: 2)) : .als(Self.als(threads: 2))
    let model = try #require(try trainImplicit(data: train, config: config) as? MFModel)
    let score = Self.ndcg(model, train: train, test: test)
    let random = Self.ndcg(try Self.baseline(model, popularity: false), train: train, test: test)
    let popular = Self.ndcg(try Self.baseline(model, popularity: true), train: train, test: test)
    #expect(score > 2 * random, "\(kind): ndcg@10 \(score) vs random \(random)")
    #expect(score > 1.5 * popular, "\(kind): ndcg@10 \(score) vs popularity \(popular)")
  }

  @Test func bprWithPopularityNegativesAndNoBiasColumnLearns() throws {
    let (train, test) = try Self.plantedClusters().leaveLastOutSplit(seed: 1)
    var c = Self.bpr()
    c.negativeSampling = .popularity
    let withBias = try BPRTrainer.train(train, config: c)
    #expect(withBias.dim == 17)
    #expect(withBias.userVector(4).last == 1)
    c.itemBias = false
    let plain = try BPRTrainer.train(train, config: c)
    #expect(plain.dim == 16)
    let random = Self.ndcg(try Self.baseline(plain, popularity: false), train: train, test: test)
    for m in [withBias, plain] {
      let score = Self.ndcg(m, train: train, test: test)
      #expect(score > 2 * random, "ndcg@10 \(score) vs random \(random)")
    }
  }

  /// Dynamic negative sampling steps on the highest-scored of several draws, so the triples it
  /// trains on are harder: fewer of them are already ordered correctly than with one draw, and
  /// the model still finds the planted clusters.
  @Test func bprDynamicNegativesTrainOnHarderTriples() throws {
    let (train, test) = try Self.plantedClusters().leaveLastOutSplit(seed: 1)
    func correct(_ candidates: Int) throws -> (Double, MFModel) {
      var c = Self.bpr()
      c.negativeCandidates = candidates
      c.recencyBoost = 0  // triples drawn uniformly, so only the negatives differ
      var last = 0.0
      let model = try BPRTrainer.train(train, config: c) { p in
        last = p.validation["correct"] ?? -1
        return true
      }
      return (last, model)
    }
    let (plain, _) = try correct(1)
    let (dynamic, model) = try correct(4)
    #expect(dynamic < plain - 0.05, "correct: 4 candidates \(dynamic), 1 candidate \(plain)")
    let random = Self.ndcg(try Self.baseline(model, popularity: false), train: train, test: test)
    #expect(Self.ndcg(model, train: train, test: test) > 2 * random)

    var bad = Self.bpr()
    bad.negativeCandidates = 0
    #expect(throws: TrainingError.self) { try BPRTrainer.train(train, config: bad) }
  }

  /// Popularity-weighted missing data: the weights have mean 1 and grow with popularity, the
  /// loss still falls, and the model still finds the planted clusters.
  @Test func alsWithPopularityWeightedMissingDataLearns() throws {
    let (train, test) = try Self.plantedClusters().leaveLastOutSplit(seed: 1)
    let weights = ALSTrainer.missingWeights(ImplicitMatrix(train).transposed(), exponent: 0.5)
    #expect(abs(weights.reduce(0, +) / Float(weights.count) - 1) < 1e-4)
    let indptr = ImplicitMatrix(train).transposed().indptr
    let counts: [Int] = (0..<weights.count).map { indptr[$0 + 1] - indptr[$0] }
    let popular = counts.indices.max { counts[$0] < counts[$1] }!
    let rare = counts.indices.min { counts[$0] < counts[$1] }!
    #expect(weights[popular] > 1 && weights[rare] < 1)

    var c = Self.als(threads: 2)
    c.popularityExponent = 0.5
    var losses: [Double] = []
    let model = try ALSTrainer.train(train, config: c) { p in
      losses.append(p.loss)
      return true
    }
    #expect(losses.allSatisfy(\.isFinite) && losses.last! < losses.first!)
    let plain = try ALSTrainer.train(train, config: Self.als(threads: 2))
    #expect(Array(model.itemVector(3)) != Array(plain.itemVector(3)))
    let random = Self.ndcg(try Self.baseline(model, popularity: false), train: train, test: test)
    #expect(Self.ndcg(model, train: train, test: test) > 2 * random)
    c.popularityExponent = -1
    #expect(throws: TrainingError.self) { try ALSTrainer.train(train, config: c) }
  }

  @Test func implicitScoresAreDotProducts() throws {
    let model = try ALSTrainer.train(Self.data(), config: Self.als(iterations: 2))
    let u: Int32 = 5
    let i: Int32 = 7
    let dot = zip(model.userVector(u), model.itemVector(i)).reduce(Float(0)) { $0 + $1.0 * $1.1 }
    #expect(abs(model.predict(user: u, item: i) - dot) < 1e-5)
    #expect(model.predict(user: nil, item: i) == 0)
    #expect(model.predict(user: u, item: nil) == 0)
    #expect(model.ratingRange == nil)
  }

  @Test func bprIsDeterministicForASeedOnOneThread() throws {
    let d = try Self.data()
    let a = try BPRTrainer.train(d, config: Self.bpr(epochs: 3))
    let b = try BPRTrainer.train(d, config: Self.bpr(epochs: 3))
    let c = try BPRTrainer.train(d, config: Self.bpr(epochs: 3, seed: 4))
    #expect(Array(a.userVector(0)) == Array(b.userVector(0)))
    #expect(Array(a.itemVector(9)) == Array(b.itemVector(9)))
    #expect(Array(a.itemVector(9)) != Array(c.itemVector(9)))
  }

  @Test func alsIsDeterministicAtAnyThreadCount() throws {
    let d = try Self.data()
    let a = try ALSTrainer.train(d, config: Self.als(threads: 1, iterations: 3))
    let b = try ALSTrainer.train(d, config: Self.als(threads: 2, iterations: 3))
    #expect(Array(a.userVector(3)) == Array(b.userVector(3)))
    #expect(Array(a.itemVector(11)) == Array(b.itemVector(11)))
  }

  @Test(arguments: ["bpr", "als"])
  func progressReportsAndCancelThrows(kind: String) throws {
    let d = try Self.data()
    let config: ImplicitModelConfig =
      kind == "bpr" ? .bpr(Self.bpr(epochs: 4)) : .als(Self.als(iterations: 4))
    var reports: [TrainingProgress] = []
    _ = try trainImplicit(data: d, config: config) { p in
      reports.append(p)
      return true
    }
    #expect(reports.map(\.epoch) == [1, 2, 3, 4])
    #expect(reports.allSatisfy { $0.epochs == 4 && $0.loss.isFinite && $0.loss > 0 })
    #expect(reports.last!.loss < reports.first!.loss)

    let dir = TempDir()
    var calls = 0
    let error = errorOf {
      try trainAndPublishImplicit(
        data: d, config: config, modelsDirectory: dir.path, name: "m",
        progress: { _ in
          calls += 1
          return calls < 2
        })
    }
    #expect(error as? TrainingError == .cancelled)
    #expect(calls == 2)
    #expect(try ModelStore.versions(dir.path, name: "m").isEmpty)
  }

  @Test(arguments: ["bpr", "als"])
  func publishAndLoadServeIdenticalScores(kind: String) throws {
    let dir = TempDir()
    let d = try Self.data()
    let config: ImplicitModelConfig =
      kind == "bpr" ? .bpr(Self.bpr(epochs: 5)) : .als(Self.als(iterations: 3))
    let result = try trainAndPublishImplicit(
      data: d, config: config, modelsDirectory: dir.path, name: "imp")
    #expect(result.kind == kind)
    #expect(result.version == 1)
    #expect((result.metrics["ndcg@10"] ?? -1) > 0)
    #expect(result.metrics["hr@10"] != nil)
    let loaded = try ModelStore.load(modelsDirectory: dir.path, name: "imp")
    #expect(loaded.manifest.kind == kind)
    #expect(loaded.manifest.hyperparameters["dim"] == .int(16))
    #expect(loaded.manifest.metrics["ndcg@10"] == result.metrics["ndcg@10"])
    #expect(loaded.manifest.trainingData["split"] == .string("leave-last-out"))
    let m = try #require(loaded.model as? MFModel)
    #expect(m.kind == kind)
    let original = result.model
    #expect(m.userIds == original.userIds && m.itemIds == original.itemIds)
    var a = [Float](repeating: 0, count: m.itemCount)
    var b = [Float](repeating: 0, count: m.itemCount)
    for u in [Int32(0), 17, Int32(m.userCount - 1)] {
      original.scoreAll(user: u, into: &a)
      m.scoreAll(user: u, into: &b)
      #expect(a == b)
      #expect(Array(m.seenItems(user: u)) == Array(original.seenItems(user: u)))
      #expect(m.predict(user: u, item: 3) == original.predict(user: u, item: 3))
    }
  }

  @Test func thresholdKeepsOnlyHighRatingsAndDuplicatesMerge() throws {
    let rows = [
      InteractionRow(user: "a", item: "x", rating: 5, timestamp: 1),
      InteractionRow(user: "a", item: "x", rating: 4, timestamp: 2),
      InteractionRow(user: "a", item: "y", rating: 1, timestamp: 3),
      InteractionRow(user: "b", item: "y", rating: 4, timestamp: 4),
    ]
    let d = try Interactions(rows: rows)
    let m = ImplicitMatrix(d)
    #expect(m.nnz == 3)
    #expect(m.values == [2, 1, 1])
    let p = d.implicitPositives(threshold: 4)
    #expect(p.count == 3)
    let pm = ImplicitMatrix(p)
    #expect(pm.nnz == 2)
    #expect(pm.transposed().transposed().indices == pm.indices)
  }

  /// CG on (s·(YᵀY + λI) + ridge·I + Σ w y yᵀ) x = Σ c y with enough steps matches a direct
  /// solve (c = 1 + w as in plain WRMF; s and ridge as the item side of popularity weighting).
  @Test func conjugateGradientMatchesDirectSolve() {
    let D = 6
    let I = 20
    var rng = Xoshiro256(seed: 5)
    let Y = (0..<(I * D)).map { _ in Float(rng.nextGaussian()) * 0.5 }
    let reg: Float = 0.1
    var G = [Float](repeating: 0, count: D * D)
    Y.withUnsafeBufferPointer { y in
      G.withUnsafeMutableBufferPointer { g in
        ALSTrainer.computeGram(y.baseAddress!, rows: I, dim: D, reg: reg, into: g.baseAddress!)
      }
    }
    let items: [Int32] = [1, 4, 9, 13, 19]
    let weights: [Float] = [3, 10, 1, 40, 0.5]
    let confidence = weights.map { 1 + $0 }
    let gramScale: Float = 1.7
    let ridge: Float = 0.3
    // Direct: A = s·G + ridge·I + Σ w y yᵀ, b = Σ c y, Gaussian elimination in Double.
    var A = G.map { Double(gramScale) * Double($0) }
    for r in 0..<D { A[r * D + r] += Double(ridge) }
    var b = [Double](repeating: 0, count: D)
    for (k, i) in items.enumerated() {
      let y = Array(Y[(Int(i) * D)..<(Int(i) * D + D)]).map { Double($0) }
      let w = Double(weights[k])
      for r in 0..<D {
        b[r] += Double(confidence[k]) * y[r]
        for c in 0..<D { A[r * D + c] += w * y[r] * y[c] }
      }
    }
    for col in 0..<D {
      for r in (col + 1)..<D {
        let f = A[r * D + col] / A[col * D + col]
        for c in col..<D { A[r * D + c] -= f * A[col * D + c] }
        b[r] -= f * b[col]
      }
    }
    var direct = [Double](repeating: 0, count: D)
    for r in stride(from: D - 1, through: 0, by: -1) {
      var s = b[r]
      for c in (r + 1)..<D { s -= A[r * D + c] * direct[c] }
      direct[r] = s / A[r * D + r]
    }
    var x = [Float](repeating: 0.01, count: D)
    let scratch = UnsafeMutablePointer<Float>.allocate(capacity: 3 * D)
    defer { scratch.deallocate() }
    // A few steps from a warm start move towards the solution; D steps reach it.
    func error(_ x: [Float]) -> Double {
      zip(x, direct).map { (Double($0) - $1) * (Double($0) - $1) }.reduce(0, +).squareRoot()
    }
    let before = error(x)
    for steps in [2, 2 * D] {
      Y.withUnsafeBufferPointer { y in
        G.withUnsafeBufferPointer { g in
          items.withUnsafeBufferPointer { idx in
            weights.withUnsafeBufferPointer { w in
              confidence.withUnsafeBufferPointer { c in
                x.withUnsafeMutableBufferPointer { xb in
                  ALSTrainer.solveRow(
                    x: xb.baseAddress!, fixed: y.baseAddress!, gram: g.baseAddress!,
                    gramScale: gramScale, ridge: ridge, dim: D, indices: idx.baseAddress!,
                    confidence: c.baseAddress!, weights: w.baseAddress!, count: items.count,
                    cgSteps: steps, scratch: scratch)
                }
              }
            }
          }
        }
      }
      if steps == 2 { #expect(error(x) < before) }
    }
    let scale = direct.map { abs($0) }.max()!
    #expect(error(x) < 1e-3 * max(1, scale), "cg \(x) vs direct \(direct)")
  }
}
