// SPDX-License-Identifier: GPL-2.0-only
/*
 * smpark: park every other online CPU with interrupts off, on request from user
 * space, so that a VMM can capture consistent multi-vCPU state; release them on
 * a second request. Interface: /sys/kernel/smpark/ (see README.md).
 *
 * The CPU that asks (the "keeper") keeps running everything. The hard part is
 * that nothing may wait for a parked CPU, or depend on one, while user space
 * keeps going on the keeper:
 *
 *  - The scheduler must not place work on a parked CPU. Parked CPUs are taken
 *    out of cpu_active_mask (user tasks, RT push, CFS balancing) and put into
 *    cpu_dying_mask (unbound kernel threads), exactly the two masks the 6.1
 *    scheduler consults in is_cpu_allowed(); a synchronize_rcu() then waits for
 *    wake-ups that sampled the old masks, as sched_cpu_deactivate() does.
 *  - A CPU parks only when its runqueue holds nothing but the parking thread,
 *    checked with interrupts already off, so no runnable task is stranded. Only
 *    per-CPU kthreads bound to it can be queued there afterwards; they wait.
 *  - Parking happens in a per-CPU smpboot thread, not in the stopper: stop_one_cpu
 *    is not exported, and a stopper that never returns would wedge stop_machine
 *    users anyway.
 *  - RCU: a parked CPU enters an extended quiescent state (ct_idle_enter(), as
 *    the idle loop does around WFI), so grace periods, synchronize_rcu() and
 *    expedited grace periods complete without it and no stall is reported.
 *  - Device interrupts routed to a parked CPU are moved to the keeper first and
 *    restored afterwards, or virtio completions would never be seen.
 *  - timer_migration is switched off while parked, so the keeper does not queue
 *    new timers on a parked (non-idle-looking) CPU.
 *  - Nothing here sends an IPI that waits for a parked CPU.
 *
 * What still needs a parked CPU (and so blocks until unpark) is listed in
 * README.md: smp_call_function*(wait), stop_machine, rcu_barrier(), flushing
 * per-CPU work of a parked CPU, and timers already queued on it.
 */
#include <linux/atomic.h>
#include <linux/context_tracking.h>
#include <linux/cpu.h>
#include <linux/cpumask.h>
#include <linux/delay.h>
#include <linux/err.h>
#include <linux/fs.h>
#include <linux/interrupt.h>
#include <linux/irq.h>
#include <linux/irqdesc.h>
#include <linux/kobject.h>
#include <linux/ktime.h>
#include <linux/list.h>
#include <linux/module.h>
#include <linux/mutex.h>
#include <linux/nmi.h>
#include <linux/percpu.h>
#include <linux/sched.h>
#include <linux/sched/stat.h>
#include <linux/slab.h>
#include <linux/smpboot.h>
#include <linux/sysfs.h>
#include <linux/wait.h>

#define SMPARK_VERSION "1.0.0"

static unsigned int drain_ms = 1000;
module_param(drain_ms, uint, 0644);
MODULE_PARM_DESC(
	drain_ms,
	"ms a CPU may take to run out of other runnable tasks before park fails with EBUSY");

/* Per-CPU state machine; the thread owns WORKING and PARKED. */
enum { ST_IDLE, ST_REQUESTED, ST_WORKING, ST_PARKED };

struct smpark_cpu {
	atomic_t state;
	int result;
};

static DEFINE_PER_CPU(struct task_struct *, smpark_task);
static DEFINE_PER_CPU(struct smpark_cpu, smpark_cpu);

static DEFINE_MUTEX(smpark_lock); /* serialises park, unpark and exit */
static DECLARE_WAIT_QUEUE_HEAD(smpark_wq);
static int smpark_release; /* parked CPUs leave when it becomes 1 */
static atomic_t smpark_nparked = ATOMIC_INIT(0);

/* Under smpark_lock: */
static bool smpark_parked;
static int smpark_keeper = -1;
static struct cpumask smpark_targets;
static LIST_HEAD(smpark_moved_irqs);
static char smpark_timer_migration[8]; /* saved sysctl value, "" if untouched */

struct smpark_irq {
	struct list_head node;
	unsigned int irq;
	cpumask_var_t mask;
};

/* ---- the parking thread (runs on its own CPU) ------------------------------ */

static int smpark_should_run(unsigned int cpu)
{
	return atomic_read(&per_cpu(smpark_cpu, cpu).state) == ST_REQUESTED;
}

/* Called with interrupts off and the runqueue holding only us. */
static void smpark_spin(struct smpark_cpu *pc)
{
	atomic_set(&pc->state, ST_PARKED);
	atomic_inc(&smpark_nparked);
	/* The wake-up uses RCU (domain walk in select_task_rq), so it goes first. */
	wake_up_all(&smpark_wq);

	ct_idle_enter();
	/*
	 * LDXR + WFE on arm64: the releasing store clears our exclusive monitor,
	 * which is a wake-up event (so is the SEV after it). No timer event
	 * stream is needed (the shipped kernel does not enable one).
	 */
	smp_cond_load_acquire(&smpark_release, VAL);
	ct_idle_exit();

	/* The watchdogs did not see this CPU schedule for the whole park. */
	touch_nmi_watchdog();
	atomic_dec(&smpark_nparked);
}

static void smpark_thread(unsigned int cpu)
{
	struct smpark_cpu *pc = this_cpu_ptr(&smpark_cpu);
	ktime_t deadline;

	if (atomic_cmpxchg(&pc->state, ST_REQUESTED, ST_WORKING) != ST_REQUESTED)
		return;
	deadline = ktime_add_ms(ktime_get(), drain_ms);
	for (;;) {
		local_irq_disable();
		if (READ_ONCE(smpark_release)) {
			local_irq_enable();
			pc->result = -ECANCELED;
			break;
		}
		/*
		 * Since this CPU went inactive/dying no new user task or unbound
		 * kthread can be woken here; what is still queued must leave by
		 * blocking first, so give it the CPU and look again.
		 */
		if (single_task_running()) {
			smpark_spin(pc);
			local_irq_enable();
			pc->result = 0;
			break;
		}
		local_irq_enable();
		if (ktime_after(ktime_get(), deadline)) {
			pc->result = -EBUSY;
			break;
		}
		usleep_range(200, 1000);
	}
	/* Publishes result together with the state. */
	atomic_set_release(&pc->state, ST_IDLE);
	wake_up_all(&smpark_wq);
}

static struct smp_hotplug_thread smpark_threads = {
	.store = &smpark_task,
	.thread_should_run = smpark_should_run,
	.thread_fn = smpark_thread,
	.thread_comm = "smpark/%u",
};

/* ---- helpers for the requesting side ---------------------------------------- */

static bool smpark_all(const struct cpumask *cpus, int want)
{
	unsigned int cpu;

	for_each_cpu(cpu, cpus) {
		int st = atomic_read_acquire(&per_cpu(smpark_cpu, cpu).state);

		if (want == ST_PARKED ? st != ST_PARKED && st != ST_IDLE : st != want)
			return false;
	}
	return true;
}

/* Waits without a deadline, but says so on the console if it takes long. */
static void smpark_wait_all(const struct cpumask *cpus, int want)
{
	while (!wait_event_timeout(smpark_wq, smpark_all(cpus, want), 5 * HZ))
		pr_warn("smpark: still waiting for CPUs %*pbl\n", cpumask_pr_args(cpus));
}

/*
 * Reads/writes a sysctl through procfs: timer_migration has no exported
 * setter. Best effort: without /proc in our namespace we only lose the
 * mitigation, not correctness of parking itself.
 */
static int smpark_sysctl(const char *path, char *old, size_t oldlen, const char *val)
{
	struct file *f = filp_open(path, O_RDWR, 0);
	loff_t pos = 0;
	ssize_t n;

	if (IS_ERR(f))
		return PTR_ERR(f);
	if (old) {
		n = kernel_read(f, old, oldlen - 1, &pos);
		if (n < 0) {
			filp_close(f, NULL);
			return n;
		}
		old[n] = '\0';
		pos = 0;
	}
	n = kernel_write(f, val, strlen(val), &pos);
	filp_close(f, NULL);
	return n < 0 ? n : 0;
}

#define TIMER_MIGRATION "/proc/sys/kernel/timer_migration"

static void smpark_timers_pin(void)
{
	int err = smpark_sysctl(TIMER_MIGRATION, smpark_timer_migration,
				sizeof(smpark_timer_migration), "0");

	if (err) {
		smpark_timer_migration[0] = '\0';
		pr_warn("smpark: cannot disable %s (%d); timers may land on parked CPUs\n",
			TIMER_MIGRATION, err);
	}
}

static void smpark_timers_restore(void)
{
	if (smpark_timer_migration[0])
		smpark_sysctl(TIMER_MIGRATION, NULL, 0, smpark_timer_migration);
	smpark_timer_migration[0] = '\0';
}

static void smpark_move_irqs(const struct cpumask *targets, unsigned int keeper)
{
	unsigned int irq;

	for (irq = 1; irq < nr_irqs; irq++) {
		struct irq_data *d = irq_get_irq_data(irq);
		const struct cpumask *eff;
		struct smpark_irq *m;
		int err;

		/* Per-CPU interrupts (timer, IPIs) belong to their CPU and wait there. */
		if (!d || !irq_has_action(irq) || irq_is_percpu(irq) || irq_is_percpu_devid(irq))
			continue;
		eff = irq_data_get_effective_affinity_mask(d);
		if (cpumask_empty(eff))
			eff = irq_data_get_affinity_mask(d);
		if (!cpumask_intersects(eff, targets))
			continue;
		m = kzalloc(sizeof(*m), GFP_KERNEL);
		if (!m || !zalloc_cpumask_var(&m->mask, GFP_KERNEL)) {
			kfree(m);
			pr_warn("smpark: out of memory saving irq %u affinity\n", irq);
			continue;
		}
		cpumask_copy(m->mask, irq_data_get_affinity_mask(d));
		err = irq_set_affinity(irq, cpumask_of(keeper));
		if (err) {
			pr_warn("smpark: cannot move irq %u to cpu%u (%d)\n", irq, keeper, err);
			free_cpumask_var(m->mask);
			kfree(m);
			continue;
		}
		m->irq = irq;
		list_add(&m->node, &smpark_moved_irqs);
	}
}

static void smpark_restore_irqs(void)
{
	struct smpark_irq *m, *tmp;

	list_for_each_entry_safe(m, tmp, &smpark_moved_irqs, node) {
		if (irq_has_action(m->irq))
			irq_set_affinity(m->irq, m->mask);
		list_del(&m->node);
		free_cpumask_var(m->mask);
		kfree(m);
	}
}

/* Undoes the mask changes; callers hold cpus_read_lock() and smpark_lock. */
static void smpark_reactivate(void)
{
	unsigned int cpu;

	for_each_cpu(cpu, &smpark_targets) {
		set_cpu_dying(cpu, false);
		set_cpu_active(cpu, true);
	}
	smpark_restore_irqs();
	cpumask_clear(&smpark_targets);
}

/* ---- park / unpark ------------------------------------------------------------ */

/* The store alone wakes a waiter in __cmpwait (it clears its exclusive monitor); SEV is cheap insurance. */
static void smpark_let_go(void)
{
	smp_store_release(&smpark_release, 1);
#ifdef CONFIG_ARM64
	sev();
#endif
}

static int smpark_park(void)
{
	unsigned int cpu, keeper;
	int err = 0;

	if (smpark_parked)
		return -EBUSY;

	/* Outside cpus_read_lock(): the sysctl flips a static key, which takes it. */
	smpark_timers_pin();
	cpus_read_lock();

	keeper = raw_smp_processor_id();
	cpumask_copy(&smpark_targets, cpu_online_mask);
	cpumask_clear_cpu(keeper, &smpark_targets);
	WRITE_ONCE(smpark_release, 0);

	for_each_cpu(cpu, &smpark_targets) {
		set_cpu_active(cpu, false);
		set_cpu_dying(cpu, true);
	}
	/* Wake-ups that chose a target under the old masks finish before we go on. */
	synchronize_rcu();
	smpark_move_irqs(&smpark_targets, keeper);

	for_each_cpu(cpu, &smpark_targets) {
		per_cpu(smpark_cpu, cpu).result = 0;
		atomic_set(&per_cpu(smpark_cpu, cpu).state, ST_REQUESTED);
		wake_up_process(per_cpu(smpark_task, cpu));
	}

	/*
	 * A thread that runs gives up by itself after drain_ms. One that never
	 * got the CPU (a higher-priority hog there) is cancelled here instead.
	 */
	if (!wait_event_timeout(smpark_wq, smpark_all(&smpark_targets, ST_PARKED),
				msecs_to_jiffies(drain_ms) + HZ)) {
		for_each_cpu(cpu, &smpark_targets) {
			struct smpark_cpu *pc = per_cpu_ptr(&smpark_cpu, cpu);

			if (atomic_cmpxchg(&pc->state, ST_REQUESTED, ST_IDLE) == ST_REQUESTED)
				pc->result = -ETIMEDOUT;
		}
		smpark_wait_all(&smpark_targets, ST_PARKED);
	}
	for_each_cpu(cpu, &smpark_targets) {
		if (atomic_read_acquire(&per_cpu(smpark_cpu, cpu).state) != ST_PARKED) {
			err = per_cpu(smpark_cpu, cpu).result ?: -EIO;
			pr_warn("smpark: cpu%u did not park (%d)\n", cpu, err);
		}
	}

	if (err) {
		smpark_let_go();
		smpark_wait_all(&smpark_targets, ST_IDLE);
		smpark_reactivate();
		cpus_read_unlock();
		smpark_timers_restore();
		return err;
	}

	WRITE_ONCE(smpark_keeper, keeper);
	WRITE_ONCE(smpark_parked, true);
	cpus_read_unlock();
	pr_debug("smpark: parked %*pbl, cpu%u keeps running\n", cpumask_pr_args(&smpark_targets),
		 keeper);
	return 0;
}

static void smpark_unpark(void)
{
	if (!smpark_parked)
		return;
	cpus_read_lock();
	smpark_let_go();
	smpark_wait_all(&smpark_targets, ST_IDLE);
	smpark_reactivate();
	WRITE_ONCE(smpark_parked, false);
	WRITE_ONCE(smpark_keeper, -1);
	cpus_read_unlock();
	smpark_timers_restore();
	pr_debug("smpark: unparked\n");
}

/* ---- sysfs --------------------------------------------------------------------- */

static ssize_t park_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", READ_ONCE(smpark_parked) ? 1 : 0);
}

static ssize_t park_store(struct kobject *kobj, struct kobj_attribute *attr, const char *buf,
			  size_t count)
{
	bool on;
	int err = kstrtobool(buf, &on);

	if (err)
		return err;
	mutex_lock(&smpark_lock);
	if (on)
		err = smpark_park();
	else
		smpark_unpark();
	mutex_unlock(&smpark_lock);
	return err ? err : count;
}

static ssize_t parked_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", atomic_read(&smpark_nparked));
}

static ssize_t cpus_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	int keeper = READ_ONCE(smpark_keeper);
	unsigned int cpu;
	int len = 0;

	for_each_online_cpu(cpu) {
		int st = atomic_read(&per_cpu(smpark_cpu, cpu).state);
		const char *what = st == ST_PARKED    ? "parked" :
				   st != ST_IDLE      ? "parking" :
				   (int)cpu == keeper ? "keeper" :
							"running";

		len += sysfs_emit_at(buf, len, "%u %s\n", cpu, what);
	}
	return len;
}

static ssize_t version_show(struct kobject *kobj, struct kobj_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%s\n", SMPARK_VERSION);
}

static struct kobj_attribute park_attr = __ATTR_RW(park);
static struct kobj_attribute parked_attr = __ATTR_RO(parked);
static struct kobj_attribute cpus_attr = __ATTR_RO(cpus);
static struct kobj_attribute version_attr = __ATTR_RO(version);

static struct attribute *smpark_attrs[] = {
	&park_attr.attr, &parked_attr.attr, &cpus_attr.attr, &version_attr.attr, NULL,
};

static const struct attribute_group smpark_group = {
	.attrs = smpark_attrs,
};

static struct kobject *smpark_kobj;

static int __init smpark_init(void)
{
	int err = smpboot_register_percpu_thread(&smpark_threads);

	if (err)
		return err;
	smpark_kobj = kobject_create_and_add("smpark", kernel_kobj);
	if (!smpark_kobj) {
		err = -ENOMEM;
		goto out_threads;
	}
	err = sysfs_create_group(smpark_kobj, &smpark_group);
	if (err)
		goto out_kobj;
	return 0;

out_kobj:
	kobject_put(smpark_kobj);
out_threads:
	smpboot_unregister_percpu_thread(&smpark_threads);
	return err;
}

static void __exit smpark_exit(void)
{
	/* Removing the files first drains writers still inside park_store(). */
	kobject_put(smpark_kobj);
	mutex_lock(&smpark_lock);
	smpark_unpark();
	mutex_unlock(&smpark_lock);
	smpboot_unregister_percpu_thread(&smpark_threads);
}

module_init(smpark_init);
module_exit(smpark_exit);

MODULE_DESCRIPTION("Park the other CPUs with interrupts off for consistent vCPU snapshots");
MODULE_LICENSE("GPL");
MODULE_VERSION(SMPARK_VERSION);
