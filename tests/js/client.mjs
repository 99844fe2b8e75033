// Drives fluxserve with the official `replicate` npm client; prints one JSON object per scenario.
// Usage: node client.mjs <scenario>   (env: FLUXSERVE_BASE_URL, e.g. http://127.0.0.1:5000/v1; FLUXSERVE_KEY)
import Replicate from "replicate";

const replicate = new Replicate({ auth: process.env.FLUXSERVE_KEY, baseUrl: process.env.FLUXSERVE_BASE_URL });

const scenarios = {
  async run() {
    const output = await replicate.run("black-forest-labs/flux-schnell", {
      input: { prompt: "a red fox", megapixels: "0.25", num_outputs: 2, seed: 3 },
    });
    return { output: output.map(String) };
  },
  async createAndWait() {
    let prediction = await replicate.predictions.create({
      model: "fluxserve-fixtures/slow-steps",
      input: { steps: 3, step_seconds: 0.05 },
    });
    const created = prediction.status;
    prediction = await replicate.wait(prediction, { interval: 50 });
    return { created, status: prediction.status, output: prediction.output, logs: prediction.logs };
  },
  async cancel() {
    let prediction = await replicate.predictions.create({
      model: "fluxserve-fixtures/slow-steps",
      input: { steps: 200, step_seconds: 0.05 },
    });
    await new Promise((resolve) => setTimeout(resolve, 400));
    prediction = await replicate.predictions.cancel(prediction.id);
    const deadline = Date.now() + 5000;
    while (prediction.status !== "canceled" && Date.now() < deadline) {
      prediction = await replicate.predictions.get(prediction.id);
    }
    return { status: prediction.status };
  },
  async invalid() {
    try {
      await replicate.run("black-forest-labs/flux-schnell", { input: { prompt: "x", aspect_ratio: "7:3" } });
      return { raised: false };
    } catch (error) {
      return { raised: true, status: error.response?.status, message: String(error.message) };
    }
  },
  async failed() {
    try {
      await replicate.run("fluxserve-fixtures/raises-in-predict", { input: { message: "out of cheese" } });
      return { raised: false };
    } catch (error) {
      return { raised: true, message: String(error.message) };
    }
  },
  async list() {
    const page = await replicate.predictions.list();
    return { count: page.results.length, first: page.results[0]?.id ?? null };
  },
  async deployments() {
    const hardware = await replicate.hardware.list();
    const collections = await replicate.collections.list();
    const flux = await replicate.collections.get("flux");
    const model = await replicate.models.get("fluxserve-fixtures", "noop");
    const created = await replicate.deployments.create({
      name: "js-echo",
      model: "fluxserve-fixtures/noop",
      version: model.latest_version.id,
      hardware: hardware[0].sku,
      min_instances: 0,
      max_instances: 1,
    });
    const updated = await replicate.deployments.update(created.owner, "js-echo", { max_instances: 2 });
    const listed = await replicate.deployments.list();
    let prediction = await replicate.deployments.predictions.create(created.owner, "js-echo", {
      input: { prompt: "from js" },
    });
    prediction = await replicate.wait(prediction, { interval: 50 });
    const deleted = await replicate.deployments.delete(created.owner, "js-echo");
    return {
      hardware: hardware.map((h) => h.sku),
      collections: collections.results.map((c) => c.slug),
      fluxModels: flux.models.map((m) => m.name),
      release: updated.current_release.number,
      listed: listed.results.map((d) => d.name),
      deployment: prediction.deployment,
      output: prediction.output,
      deleted,
    };
  },
};

const name = process.argv[2];
scenarios[name]()
  .then((result) => console.log(JSON.stringify(result)))
  .catch((error) => {
    console.error(error);
    process.exit(1);
  });
