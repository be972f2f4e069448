import Foundation
import Testing

@testable import RecServeModels

@Suite struct SyntheticAndSplitTests {
  @Test func syntheticIsDeterministicAndInRange() throws {
    let a = smallSynthetic(seed: 9)
    let b = smallSynthetic(seed: 9)
    let c = smallSynthetic(seed: 10)
    #expect(a.users == b.users && a.items == b.items && a.ratings == b.ratings)
    #expect(a.timestamps == b.timestamps && a.itemIds == b.itemIds)
    #expect(a.ratings != c.ratings)
    #expect(a.ratings.allSatisfy { $0 >= 0.5 && $0 <= 5 && ($0 * 2).rounded() == $0 * 2 })
    #expect(a.userCount == 300)
    #expect(a.userIds.first == "u1" && a.itemIds.allSatisfy { $0.hasPrefix("i") })
    // Roughly density * users * items ratings.
    #expect(a.count > 5_000 && a.count < 15_000)
  }

  @Test func syntheticCSVHasTheDocumentedHeader() throws {
    let dir = TempDir()
    let p = dir.file("syn.csv")
    let d = try SyntheticData.write(SyntheticData.Config(users: 20, items: 30, seed: 1), to: p)
    let text = try String(contentsOfFile: p, encoding: .utf8)
    #expect(text.hasPrefix("user_id,item_id,rating,timestamp\n"))
    let back = try Interactions.load(path: p)
    #expect(back.count == d.count && back.ratings == d.ratings)
  }

  @Test func splitIsSeededAndDisjoint() {
    let d = smallSynthetic()
    let (train, test) = d.randomSplit(holdout: 0.2, seed: 1)
    let (train2, test2) = d.randomSplit(holdout: 0.2, seed: 1)
    let (_, test3) = d.randomSplit(holdout: 0.2, seed: 2)
    #expect(test.count == Int(Double(d.count) * 0.2))
    #expect(train.count + test.count == d.count)
    #expect(test.ratings == test2.ratings && train.ratings == train2.ratings)
    #expect(test.users.map { test.userIds[Int($0)] } != test3.users.map { test3.userIds[Int($0)] })
    let (all, none) = d.randomSplit(holdout: 0, seed: 1)
    #expect(all.count == d.count && none.isEmpty)
  }
}

@Suite struct MFTrainingTests {
  @Test func recoversPlantedStructure() throws {
    let data = smallSynthetic()
    let (train, test) = data.randomSplit(holdout: 0.1, seed: 4)
    let model = try MFTrainer.train(train, config: quickConfig())
    let mf = RatingMetrics.evaluate(model: model, on: test)
    // Baseline: predicting the training mean for everything.
    let mean = train.ratings.reduce(0.0) { $0 + Double($1) } / Double(train.count)
    var acc = ErrorAccumulator()
    for r in test.ratings { acc.add(predicted: Float(mean), actual: r) }
    #expect(mf.rmse < 0.6 * acc.rmse, "MF rmse \(mf.rmse) vs global mean \(acc.rmse)")
    #expect(mf.mae < mf.rmse)
  }

  @Test func deterministicForASeed() throws {
    let data = smallSynthetic()
    let a = try MFTrainer.train(data, config: quickConfig(seed: 1))
    let b = try MFTrainer.train(data, config: quickConfig(seed: 1))
    let c = try MFTrainer.train(data, config: quickConfig(seed: 2))
    let n = a.itemCount * a.dim
    #expect(
      Array(UnsafeBufferPointer(start: a.itemFactors, count: n))
        == Array(UnsafeBufferPointer(start: b.itemFactors, count: n)))
    #expect(
      Array(UnsafeBufferPointer(start: a.itemFactors, count: n))
        != Array(UnsafeBufferPointer(start: c.itemFactors, count: n)))
  }

  @Test func twoThreadsAreDeterministicAndStillLearn() throws {
    let data = smallSynthetic()
    let (train, test) = data.randomSplit(holdout: 0.1, seed: 4)
    var config = quickConfig(seed: 3)
    config.threads = 2
    let a = try MFTrainer.train(train, config: config)
    let b = try MFTrainer.train(train, config: config)
    let n = a.itemCount * a.dim
    #expect(
      Array(UnsafeBufferPointer(start: a.itemFactors, count: n))
        == Array(UnsafeBufferPointer(start: b.itemFactors, count: n)))
    config.threads = 1
    let single = try MFTrainer.train(train, config: config)
    let rmse2 = RatingMetrics.evaluate(model: a, on: test).rmse
    let rmse1 = RatingMetrics.evaluate(model: single, on: test).rmse
    #expect(abs(rmse2 - rmse1) < 0.05, "2 threads \(rmse2) vs 1 thread \(rmse1)")
  }

  @Test func progressReportsEveryEpochAndCanCancel() throws {
    let data = smallSynthetic()
    let (train, test) = data.randomSplit(holdout: 0.1, seed: 1)
    var seen: [TrainingProgress] = []
    var config = quickConfig()
    config.epochs = 5
    _ = try MFTrainer.train(train, config: config, validation: test) { p in
      seen.append(p)
      return true
    }
    #expect(seen.map(\.epoch) == [1, 2, 3, 4, 5])
    #expect(seen.allSatisfy { $0.epochs == 5 && $0.loss > 0 && $0.validationRMSE != nil })
    #expect(seen.last!.etaSeconds == 0)
    #expect(seen.last!.loss < seen.first!.loss)
    var calls = 0
    let e = errorOf {
      try MFTrainer.train(train, config: config) { _ in
        calls += 1
        return calls < 2
      }
    }
    #expect(e as? TrainingError == .cancelled)
    #expect(calls == 2)
  }

  @Test func invalidConfigurationIsRejected() {
    let data = smallSynthetic()
    var config = quickConfig()
    config.dim = 0
    #expect(
      "\(errorOf { try MFTrainer.train(data, config: config) }!)"
        == "dim must be in 1...4096 (got 0)")
    config = quickConfig()
    config.learningRate = .nan
    #expect(errorOf { try MFTrainer.train(data, config: config) } is TrainingError)
  }

  @Test func predictionsFallBackForUnknownIdsAndScoreAllMatchesPredict() throws {
    let data = smallSynthetic()
    let model = try MFTrainer.train(data, config: quickConfig())
    let mu = model.globalMean
    #expect(model.predict(user: nil, item: nil) == mu)
    let clip = { (x: Float) in
      min(model.ratingRange!.upperBound, max(model.ratingRange!.lowerBound, x))
    }
    #expect(model.predict(user: nil, item: 3) == clip(mu + model.itemBias[3]))
    #expect(model.predict(user: 2, item: nil) == clip(mu + model.userBias[2]))
    #expect(model.predict(user: 99_999, item: 3) == clip(mu + model.itemBias[3]))
    var scores = [Float](repeating: 0, count: model.itemCount)
    scores.withUnsafeMutableBufferPointer { model.scoreAll(user: 7, into: $0.baseAddress!) }
    for i in 0..<model.itemCount {
      let direct =
        mu + model.userBias[7] + model.itemBias[i]
        + VectorMath.dot(
          model.userFactors + 7 * model.dim, model.itemFactors + i * model.dim, model.dim)
      #expect(abs(scores[i] - direct) < 1e-4)
    }
    var some = [Float](repeating: 0, count: 3)
    let picks: [Int32] = [5, 0, 9]
    picks.withUnsafeBufferPointer { p in
      some.withUnsafeMutableBufferPointer { model.score(user: 7, items: p, into: $0.baseAddress!) }
    }
    #expect(zip(some, picks).allSatisfy { abs($0 - scores[Int($1)]) < 1e-4 })
  }

  @Test func seenItemsAreTheSortedDistinctTrainingHistory() throws {
    let rows = [
      InteractionRow(user: "a", item: "z", rating: 4),
      InteractionRow(user: "a", item: "x", rating: 3),
      InteractionRow(user: "b", item: "y", rating: 5),
      InteractionRow(user: "a", item: "z", rating: 2),
    ]
    let data = try Interactions(rows: rows)
    let model = try MFTrainer.train(data, config: quickConfig())
    let a = model.userIndex("a")!
    let b = model.userIndex("b")!
    let z = model.itemIndex("z")!
    let x = model.itemIndex("x")!
    let y = model.itemIndex("y")!
    #expect(Array(model.seenItems(user: a)) == [z, x].sorted())
    #expect(Array(model.seenItems(user: b)) == [y])
    #expect(model.hasSeen(user: a, item: x) && !model.hasSeen(user: b, item: x))
    #expect(model.itemPopularity[Int(z)] == 1 && model.itemPopularity[Int(y)] == 1)
    #expect(model.seenItems(user: 17).isEmpty)
  }
}

@Suite struct TopKTests {
  func bruteForce(_ scores: [Float], k: Int, skip: (Int32) -> Bool) -> [TopK.Entry] {
    let all = scores.enumerated().compactMap { (i, s) -> TopK.Entry? in
      s.isNaN || skip(Int32(i)) ? nil : (Int32(i), s)
    }
    let sorted = all.sorted { $0.score > $1.score || ($0.score == $1.score && $0.index < $1.index) }
    return Array(sorted.prefix(k))
  }

  func same(_ a: [TopK.Entry], _ b: [TopK.Entry]) -> Bool {
    a.count == b.count && zip(a, b).allSatisfy { $0.index == $1.index && $0.score == $1.score }
  }

  @Test func matchesBruteForceWithTiesAndSkips() {
    var rng = Xoshiro256(seed: 11)
    for trial in 0..<200 {
      let n = 1 + rng.nextInt(below: 300)
      // Few distinct values so that ties are common.
      let levels = 1 + rng.nextInt(below: 6)
      var scores = (0..<n).map { _ in Float(rng.nextInt(below: levels)) }
      if trial % 7 == 0 { scores[rng.nextInt(below: n)] = .nan }
      let k = rng.nextInt(below: n + 3)
      let modulus = Int32(2 + trial % 5)
      let skip = { (i: Int32) in trial % 3 == 0 && i % modulus == 0 }
      let got = scores.withUnsafeBufferPointer {
        TopK.select(scores: $0.baseAddress!, count: n, k: k, skip: skip)
      }
      #expect(same(got, bruteForce(scores, k: k, skip: skip)), "trial \(trial)")
    }
  }

  @Test func candidateListsDeduplicateAndIgnoreOutOfRange() {
    let scores: [Float] = [0.5, 2, 2, -1, 7, 3]
    let candidates: [Int32] = [3, 1, 1, 2, 99, -4, 5, 0, 2]
    let got = scores.withUnsafeBufferPointer { s in
      candidates.withUnsafeBufferPointer { c in
        TopK.select(scores: s.baseAddress!, count: s.count, candidates: c, k: 3, skip: { $0 == 5 })
      }
    }
    #expect(got.map(\.index) == [1, 2, 0])
    #expect(got.map(\.score) == [2, 2, 0.5])
    let indices: [Int32] = [10, 20, 10, 30]
    let parallel: [Float] = [1, 5, 1, 5]
    let top = indices.withUnsafeBufferPointer { i in
      parallel.withUnsafeBufferPointer { p in
        TopK.select(indices: i, scores: p.baseAddress!, k: 10, skip: { _ in false })
      }
    }
    #expect(top.map(\.index) == [20, 30, 10])
  }

  @Test func edgeCases() {
    let scores: [Float] = [1, 2, 3]
    scores.withUnsafeBufferPointer { s in
      #expect(TopK.select(scores: s.baseAddress!, count: 3, k: 0).isEmpty)
      #expect(TopK.select(scores: s.baseAddress!, count: 3, k: -1).isEmpty)
      #expect(TopK.select(scores: s.baseAddress!, count: 3, k: 10).map(\.index) == [2, 1, 0])
      #expect(TopK.select(scores: s.baseAddress!, count: 3, k: 2, skip: { _ in true }).isEmpty)
    }
  }
}

@Suite struct MFAdamAndEarlyStoppingTests {
  func adamConfig(seed: UInt64 = 5) -> MFConfig {
    var c = quickConfig(seed: seed)
    c.optimizer = .adam
    c.learningRate = 0.01
    c.epochs = 20
    return c
  }

  @Test func adamLearnsThePlantedStructure() throws {
    let data = smallSynthetic()
    let (train, test) = data.randomSplit(holdout: 0.1, seed: 4)
    let model = try MFTrainer.train(train, config: adamConfig())
    let mf = RatingMetrics.evaluate(model: model, on: test)
    let mean = train.ratings.reduce(0.0) { $0 + Double($1) } / Double(train.count)
    var acc = ErrorAccumulator()
    for r in test.ratings { acc.add(predicted: Float(mean), actual: r) }
    #expect(mf.rmse < 0.6 * acc.rmse, "Adam rmse \(mf.rmse) vs global mean \(acc.rmse)")
  }

  @Test func adamIsDeterministicForASeedAlsoOnTwoThreads() throws {
    let data = smallSynthetic()
    for threads in [1, 2] {
      var config = adamConfig(seed: 1)
      config.threads = threads
      config.epochs = 5
      let a = try MFTrainer.train(data, config: config)
      let b = try MFTrainer.train(data, config: config)
      config.seed = 2
      let c = try MFTrainer.train(data, config: config)
      let n = a.itemCount * a.dim
      let fa = Array(UnsafeBufferPointer(start: a.itemFactors, count: n))
      #expect(fa == Array(UnsafeBufferPointer(start: b.itemFactors, count: n)))
      #expect(fa != Array(UnsafeBufferPointer(start: c.itemFactors, count: n)))
      #expect(
        Array(UnsafeBufferPointer(start: a.userBias, count: a.userCount))
          == Array(UnsafeBufferPointer(start: b.userBias, count: b.userCount)))
    }
  }

  @Test func earlyStoppingStopsAndReturnsTheBestEpoch() throws {
    let data = smallSynthetic()
    let (train, validation) = data.randomSplit(holdout: 0.2, seed: 8)
    // Over-fits: many factors, no regularisation, a high constant learning rate.
    var config = quickConfig(seed: 6)
    config.dim = 32
    config.regularization = 0
    config.biasRegularization = 0
    config.learningRate = 0.05
    config.learningRateDecay = 1
    config.initStd = 0.1
    config.epochs = 200
    config.earlyStoppingPatience = 3
    var seen: [TrainingProgress] = []
    let (model, summary) = try MFTrainer.trainWithSummary(
      train, config: config, validation: validation
    ) { p in
      seen.append(p)
      return true
    }
    #expect(summary.stoppedEarly && summary.epochsRun < config.epochs)
    #expect(seen.count == summary.epochsRun)
    let rmses = seen.map { $0.validationRMSE! }
    let bestSeen = rmses.min()!
    #expect(summary.bestEpoch == rmses.firstIndex(of: bestSeen)! + 1)
    #expect(summary.epochsRun == summary.bestEpoch! + 3)
    #expect(summary.bestValidationRMSE == bestSeen)
    // The returned model is the best epoch's: its validation RMSE is the best seen, not the last.
    let got = RatingMetrics.evaluate(model: model, on: validation).rmse
    #expect(abs(got - bestSeen) < 1e-6, "returned \(got), best \(bestSeen), last \(rmses.last!)")
    #expect(rmses.last! > bestSeen)
    // Deterministic for a seed.
    let (again, summary2) = try MFTrainer.trainWithSummary(
      train, config: config, validation: validation)
    #expect(summary2 == summary)
    let n = model.itemCount * model.dim
    #expect(
      Array(UnsafeBufferPointer(start: model.itemFactors, count: n))
        == Array(UnsafeBufferPointer(start: again.itemFactors, count: n)))
  }

  @Test func earlyStoppingNeedsValidationAndValidConfig() {
    let data = smallSynthetic()
    var config = quickConfig()
    config.earlyStoppingPatience = 2
    #expect(
      "\(errorOf { try MFTrainer.train(data, config: config) }!)"
        == "early stopping needs validation rows (none were given)")
    config.earlyStoppingPatience = 0
    #expect(errorOf { try MFTrainer.train(data, config: config) } is TrainingError)
    config = quickConfig()
    config.beta2 = 1
    #expect(
      "\(errorOf { try MFTrainer.train(data, config: config) }!)"
        == "beta2 must be in [0, 1) (got 1.0)")
  }

  @Test func publishCarvesValidationFromTrainingAndRecordsTheStop() throws {
    let dir = TempDir()
    var config = adamConfig(seed: 3)
    config.epochs = 60
    config.earlyStoppingPatience = 2
    let result = try trainAndPublishMF(
      data: smallSynthetic(), config: config, holdout: 0.1, modelsDirectory: dir.path,
      name: "es")
    let total = smallSynthetic().count
    let test = Int(Double(total) * 0.1)
    let validation = Int(Double(total - test) * 0.1)
    #expect(result.testRows == test)
    #expect(result.trainRows == total - test - validation)
    let stopped = try #require(result.metrics["stopped_epoch"])
    let best = try #require(result.metrics["best_epoch"])
    #expect(stopped <= 60 && best <= stopped && result.metrics["validation_rmse"] != nil)
    let manifest = try String(
      contentsOfFile: result.directory + "/model.json", encoding: .utf8)
    #expect(manifest.contains("\"optimizer\"") && manifest.contains("\"adam\""))
    #expect(manifest.contains("\"early_stopping_patience\""))
    #expect(manifest.contains("\"stopped_epoch\"") && manifest.contains("\"validation_rows\""))

    // The served history holds every training-split row, the validation slice included (the
    // user did rate those items), but none of the held-out test rows.
    let data = smallSynthetic()
    let (train, _) = data.randomSplit(holdout: 0.1, seed: config.seed)
    let served = try #require(
      try ModelStore.load(modelsDirectory: dir.path, name: "es").model as? MFModel)
    func pairs(_ d: Interactions) -> Set<String> {
      Set((0..<d.count).map { "\(d.userIds[Int(d.users[$0])])|\(d.itemIds[Int(d.items[$0])])" })
    }
    var seen = Set<String>()
    for u in 0..<served.userCount {
      for i in served.seenItems(user: Int32(u)) {
        seen.insert("\(served.userIds[u])|\(served.itemIds[Int(i)])")
      }
    }
    let known = pairs(train).filter { p in
      let parts = p.split(separator: "|").map(String.init)
      return served.userIndex(parts[0]) != nil && served.itemIndex(parts[1]) != nil
    }
    #expect(known.count > result.trainRows)
    let missing = known.subtracting(seen).count
    let extra = seen.subtracting(pairs(train)).count
    #expect(missing == 0, "\(missing) training-split pairs missing from the served history")
    #expect(extra == 0, "\(extra) served-history pairs not in the training split")
  }
}
