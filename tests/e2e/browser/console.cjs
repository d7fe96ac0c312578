// The console in a real headless browser (Debian's chromium, driven by playwright-core), on a
// local mesh the Rust test brought up: the process director signs in, sees a newly registered case
// appear on the board with its deadline, records a decision (after the form refused one without
// a summary), sees it arrive live on a second tab's timeline, and the registrant's partner view
// shows the transition in its inbox. Another organisation gets "not found" for the same page.
// Every page is scanned with axe-core: no serious or critical WCAG 2.1 A/AA violation.
//
// Environment: CHROMIUM, ZVH, MUNICIPALITY, CARE_OFFICE (console base URLs), PD_TOKEN,
// CM_TOKEN (municipality), CARE_TOKEN, REPORT_ID (a closed tier-3 escalation), SCREENSHOTS (dir).
"use strict";

const { chromium } = require("playwright-core");
const axePath = require.resolve("axe-core/axe.min.js");

const env = process.env;
const scanned = [];

function fail(message) {
  throw new Error(message);
}

async function scan(page, name) {
  await page.addScriptTag({ path: axePath });
  const result = await page.evaluate(() =>
    // eslint-disable-next-line no-undef
    axe.run(document, {
      runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"] },
    })
  );
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  if (bad.length) {
    fail(
      `${name}: accessibility violations:\n` +
        JSON.stringify(
          bad.map((v) => ({
            id: v.id,
            impact: v.impact,
            help: v.help,
            nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ")),
          })),
          null,
          1
        )
    );
  }
  if (env.SCREENSHOTS) {
    await page.screenshot({ path: `${env.SCREENSHOTS}/${scanned.length}-${name}.png`, fullPage: true });
  }
  scanned.push(name);
}

async function api(base, path, token, body, key) {
  const response = await fetch(`${base}/api/v1${path}`, {
    method: body ? "POST" : "GET",
    headers: {
      authorization: `Bearer ${token}`,
      "content-type": "application/json",
      ...(key ? { "idempotency-key": key } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await response.text();
  if (!response.ok) fail(`${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

async function signIn(page, base, token) {
  await page.goto(`${base}/console/escalations`);
  if (!page.url().includes("/console/sign-in")) fail(`not sent to sign in: ${page.url()}`);
  await page.fill("#token", token);
  await page.getByRole("button", { name: /Inloggen|Sign in/ }).click();
  await page.waitForURL(/\/console\/escalations$/);
}

async function until(what, seconds, attempt) {
  const end = Date.now() + seconds * 1000;
  for (;;) {
    const value = await attempt();
    if (value) return value;
    if (Date.now() > end) fail(`gave up waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

(async () => {
  const browser = await chromium.launch({
    executablePath: env.CHROMIUM,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  // axe is injected as a script; the console's CSP allows only its own.
  const context = () => browser.newContext({ bypassCSP: true, locale: "nl-NL" });
  try {
    // The process director: a token the node refuses first, then their own.
    const pd = await (await context()).newPage();
    await pd.goto(`${env.ZVH}/console/escalations`);
    if (!pd.url().includes("/console/sign-in")) fail("the board is not shown before signing in");
    if ((await pd.getAttribute("html", "lang")) !== "nl") fail("Dutch is not the default");
    await scan(pd, "sign-in");
    await pd.fill("#token", "dit-is-geen-token");
    await pd.getByRole("button", { name: "Inloggen" }).click();
    await pd.locator(".error-summary").waitFor();
    if ((await pd.getAttribute("#token", "aria-invalid")) !== "true") fail("the field is not marked invalid");
    await scan(pd, "sign-in-refused");
    await pd.fill("#token", env.PD_TOKEN);
    await pd.getByRole("button", { name: "Inloggen" }).click();
    await pd.waitForURL(/\/console\/escalations$/);
    await pd.getByRole("heading", { level: 1, name: "Escalaties" }).waitFor();
    await scan(pd, "board");

    // The municipality registers a case through its own REST API.
    const run = Date.now().toString(36);
    const kase = await api(env.MUNICIPALITY, "/cases", env.CM_TOKEN, { localId: `zaak-browser-${run}` }, `case-${run}`);
    await api(env.MUNICIPALITY, `/cases/${kase.caseId}/facts`, env.CM_TOKEN, {
      category: "eviction_date",
      value: "2027-03-01",
      source: "zaaksysteem",
    }, `fact-${run}`);
    const esc = await api(env.MUNICIPALITY, "/escalations", env.CM_TOKEN, {
      caseId: kase.caseId,
      tier: 1,
      urgent: true,
      categories: ["eviction_date"],
      question: "Kan de ontruiming worden opgeschort?",
    }, `reg-${run}`);
    if (!esc.deadline) fail("the registration has no deadline");

    // It appears on the board, with its deadline.
    const link = pd.locator(`a[href="/console/escalations/${esc.escalationId}"]`).first();
    await until("the new case on the board", 20, async () => {
      await pd.goto(`${env.ZVH}/console/escalations`);
      return (await link.count()) > 0;
    });
    const row = pd.locator("tbody tr", { has: pd.locator(`a[href="/console/escalations/${esc.escalationId}"]`) });
    const shown = await row.locator("time").first().getAttribute("datetime");
    if (new Date(shown).getTime() !== new Date(esc.deadline).getTime()) {
      fail(`the board shows deadline ${shown}, the registration has ${esc.deadline}`);
    }
    if (!(await row.textContent()).includes(esc.caseRef)) fail("the row does not name the case reference");
    await scan(pd, "board-with-case");

    // The escalation's page, in a second tab to watch the timeline live.
    await link.click();
    await pd.getByRole("heading", { level: 1, name: `Escalatie ${esc.caseRef}` }).waitFor();
    await pd.locator("#event-1").waitFor({ state: "attached" });
    await scan(pd, "escalation");
    const watcher = await pd.context().newPage();
    await watcher.goto(pd.url());
    await watcher.locator("#timeline").waitFor();

    // The meeting, planned in two hours (Amsterdam time, as the form asks).
    const inTwoHours = new Date(Date.now() + 2 * 3600 * 1000)
      .toLocaleString("sv-SE", { timeZone: "Europe/Amsterdam" })
      .replace(" ", "T")
      .slice(0, 16);
    await pd.fill("#at", inTwoHours);
    await pd.fill("#location", "Zorg- en Veiligheidshuis, zaal 2");
    await pd.getByRole("button", { name: "Overleg plannen" }).click();
    await pd.getByRole("status").filter({ hasText: "Het overleg is gepland." }).waitFor();
    if (!(await pd.locator("main").textContent()).includes("zaal 2")) fail("the meeting is not shown");

    // A decision without its summary is refused by the form, naming the field.
    const seat = await until("a participant to commit", 10, async () => {
      const options = await pd.locator("#seat0 option").evaluateAll((os) =>
        os.map((o) => ({ value: o.value, label: o.textContent }))
      );
      return options.find((o) => o.label.includes("GGZ De Linde"));
    });
    const due = new Date(Date.now() + 14 * 24 * 3600 * 1000).toISOString().slice(0, 10);
    await pd.selectOption("#seat0", seat.value);
    await pd.fill("#action0", "Ambulante begeleiding starten");
    await pd.fill("#due0", due);
    await pd.getByRole("button", { name: "Besluit vastleggen" }).click();
    await pd.locator(".error-summary").waitFor();
    if ((await pd.getAttribute("#summary", "aria-invalid")) !== "true") fail("the summary is not marked invalid");
    if ((await pd.inputValue("#action0")) !== "Ambulante begeleiding starten") fail("the form lost what was entered");
    await scan(pd, "escalation-form-error");

    await pd.fill("#summary", "Ontruiming opgeschort; begeleiding start binnen een week");
    await pd.getByRole("button", { name: "Besluit vastleggen" }).click();
    await pd.getByRole("status").filter({ hasText: "Het besluit is vastgelegd." }).waitFor();
    if (!(await pd.locator("dl.facts").textContent()).includes("besloten")) fail("the state is not 'besloten'");
    if (!(await pd.locator("table", { hasText: "Ambulante begeleiding starten" }).count())) fail("no commitment shown");
    await scan(pd, "escalation-decided");

    // The other tab saw it arrive without reloading.
    await watcher.locator("#timeline li", { hasText: "besloten" }).waitFor({ timeout: 20000 });
    await watcher.locator("#changed").waitFor({ state: "visible" });

    // The registrant's partner view shows the transition.
    const cm = await (await context()).newPage();
    await signIn(cm, env.MUNICIPALITY, env.CM_TOKEN);
    await until("the decision in the municipality's inbox", 20, async () => {
      await cm.goto(`${env.MUNICIPALITY}/console/inbox`);
      return (await cm.locator("tbody tr", { hasText: esc.caseRef }).filter({ hasText: "besloten" }).count()) > 0;
    });
    await scan(cm, "inbox");
    await cm.goto(`${env.MUNICIPALITY}/console/escalations/${esc.escalationId}`);
    await cm.getByRole("heading", { level: 1, name: `Escalatie ${esc.caseRef}` }).waitFor();
    await cm.goto(`${env.MUNICIPALITY}/console/mandates`);
    await scan(cm, "mandates");
    await cm.selectOption("#domain", "housing");
    await cm.getByRole("button", { name: "Zoeken" }).click();
    await cm.waitForURL(/domain=housing/);
    await scan(cm, "mandates-by-domain");
    await cm.goto(`${env.MUNICIPALITY}/console/cases`);
    await scan(cm, "cases");
    await cm.goto(`${env.MUNICIPALITY}/console/cases/${kase.caseId}`);
    if (!(await cm.locator("main").textContent()).includes("2027-03-01")) fail("the own case's fact is not shown");
    await scan(cm, "case");

    // The same escalation's page for an organisation that takes no part: not found, and no fact.
    const care = await (await context()).newPage();
    await signIn(care, env.CARE_OFFICE, env.CARE_TOKEN);
    const refused = await care.goto(`${env.CARE_OFFICE}/console/escalations/${esc.escalationId}`);
    if (refused.status() !== 404) fail(`another organisation got ${refused.status()}`);
    const text = await care.locator("main").textContent();
    if (text.includes(esc.caseRef) || text.includes("2027-03-01")) fail("the refusal shows the case");
    await scan(care, "not-found");

    // Who decides what in the region, for the process director: every node answered, searchable.
    await pd.goto(`${env.ZVH}/console/region`);
    await pd.getByRole("heading", { level: 1, name: "Wie beslist wat in de regio" }).waitFor();
    if ((await pd.locator("tbody tr").count()) === 0) fail("the region's overview lists no mandate");
    if ((await pd.getByText("Niet bereikbaar").count()) > 0) fail("a node of the local mesh did not answer");
    await scan(pd, "region");
    await pd.selectOption("#domain", "housing");
    await pd.getByRole("button", { name: "Zoeken" }).click();
    await pd.waitForURL(/domain=housing/);
    await scan(pd, "region-by-domain");

    // The tier-3 report, and the board in English.
    await pd.goto(`${env.ZVH}/console/escalations/${env.REPORT_ID}/report`);
    await pd.getByRole("heading", { level: 1, name: "Verslag trede 3" }).waitFor();
    await scan(pd, "report");
    await pd.goto(`${env.ZVH}/console/escalations`);
    await pd.getByRole("link", { name: "English" }).click();
    await pd.getByRole("heading", { level: 1, name: "Escalations" }).waitFor();
    if ((await pd.getAttribute("html", "lang")) !== "en") fail("the English page is not marked lang=en");
    await scan(pd, "board-en");

    // Signing out ends the session.
    await pd.getByRole("button", { name: "Sign out" }).click();
    await pd.goto(`${env.ZVH}/console/escalations`);
    if (!pd.url().includes("/console/sign-in")) fail("still signed in after signing out");

    console.log(`console scenario passed; pages scanned by axe-core: ${scanned.join(", ")}`);
  } catch (e) {
    // What each page showed when it failed.
    for (const context of browser.contexts()) {
      for (const page of context.pages()) {
        const main = await page.locator("main").textContent().catch(() => "");
        console.error(`--- ${page.url()}\n${(main || "").replace(/\s+/g, " ").slice(0, 2000)}`);
      }
    }
    throw e;
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
