// Drives fluxserve's OpenAI Images API with the official `openai` npm client; prints one JSON object per scenario.
// Usage: node openai_images.mjs <scenario>   (env: FLUXSERVE_BASE_URL, e.g. http://127.0.0.1:5000/v1; FLUXSERVE_KEY)
import OpenAI, { toFile } from "openai";

const client = new OpenAI({ apiKey: process.env.FLUXSERVE_KEY, baseURL: process.env.FLUXSERVE_BASE_URL, maxRetries: 0 });

// A 96×64 red PNG (made with Pillow).
const PNG_BASE64 =
  "iVBORw0KGgoAAAANSUhEUgAAAGAAAABACAIAAABqVuVZAAAAm0lEQVR4nO3QMQ0AIQDAQEAN/lUgCwWfjvxwp6DpPHsPvq3XAX9nUDAoGBQMCgYFg4JBwaBgUDAoGBQMCgYFg4JBwaBgUDAoGBQMCgYFg4JBwaBgUDAoGBQMCgYFg4JBwaBgUDAoGBQMCgYFg4JBwaBgUDAoGBQMCgYFg4JBwaBgUDAoGBQMCgYFg4JBwaBgUDAoGBQMCgYFg8IFYl8BmA0b/joAAAAASUVORK5CYII=";

async function image(name) {
  return toFile(Buffer.from(PNG_BASE64, "base64"), name, { type: "image/png" });
}

const scenarios = {
  async generate() {
    const result = await client.images.generate({
      model: "black-forest-labs/flux-schnell",
      prompt: "a lighthouse at dusk",
      size: "512x512",
      n: 2,
      response_format: "b64_json",
    });
    return {
      created: result.created,
      size: result.size,
      output_format: result.output_format,
      lengths: result.data.map((d) => d.b64_json.length),
      heads: result.data.map((d) => Buffer.from(d.b64_json, "base64").subarray(1, 4).toString()),
    };
  },
  async edit() {
    const result = await client.images.edit({
      model: "flux-2-klein-4b",
      image: [await image("a.png"), await image("b.png")],
      prompt: "put them side by side",
    });
    return { size: result.size, urls: result.data.map((d) => d.url) };
  },
  async badSize() {
    try {
      await client.images.generate({ prompt: "x", size: "10x10" });
      return { raised: false };
    } catch (error) {
      return { raised: true, status: error.status, param: error.param, type: error.type, message: error.message };
    }
  },
};

const scenario = scenarios[process.argv[2]];
if (!scenario) {
  console.error(`unknown scenario ${process.argv[2]}; one of ${Object.keys(scenarios).join(", ")}`);
  process.exit(2);
}
console.log(JSON.stringify(await scenario()));
